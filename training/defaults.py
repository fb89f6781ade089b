"""The default training mix of ``fruits train`` and ``fruits demo`` (chosen by cross-validation
on GroceryStore train and Fruits-360 Training: core/models/MODEL_CARD.md). A module of its own
so the CLI can show them in --help without loading onnxruntime."""

SYNTHETIC_PER_CLASS = 10
"""Synthetic photos per Fruits-360 class."""
EMPTY_SCENES = 300
"""Scenes without fruit, trained as 'not ours'."""
