"""The default training mix of ``fruits train`` and ``fruits demo`` (chosen by cross-validation
on GroceryStore train and Fruits-360 Training: core/models/MODEL_CARD.md). A module of its own
so the CLI can show them in --help without loading onnxruntime."""

SYNTHETIC_PER_CLASS = 0
"""Synthetic photos per Fruits-360 class. 0: with GroceryStore's real photos in the training
set they cost 0.5–1.5 points in cross-validation (they help only types without real photos:
MODEL_CARD.md); `fruits train --synthetic-per-class N` adds them."""
EMPTY_SCENES = 300
"""Scenes without fruit, trained as 'not ours'."""
AUGMENTED_COPIES = 3
"""Augmented copies (crop, mirror, colour jitter) of each GroceryStore photo: +1.0 point of
GroceryStore type top-1 over the photos alone in 5-fold cluster cross-validation (87.7 % vs
86.7 %, better in each fold), the featurizer having been fine-tuned on such copies."""
