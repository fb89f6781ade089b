"""Entry points and development tools on top of everything: the ``fruits`` CLI, the
photo client, the embedded local stack, the process supervisor, monitor, demo and
benchmarks. Nothing below imports from here."""

from core.settings import PROJECT_ROOT

SAMPLE_DATA = PROJECT_ROOT.parent / "shared" / "data"
"""The team's sample datasets (``fruits360/``, ``grocerystore/``), beside the checkout; never copied into it."""
FRUITS360_SAMPLE = SAMPLE_DATA / "fruits360"
GROCERYSTORE_SAMPLE = SAMPLE_DATA / "grocerystore"
