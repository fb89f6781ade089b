"""Entry points and development tools on top of everything: the ``fruits`` CLI, the
photo client, the embedded local stack, the process supervisor, monitor, demo and
benchmarks. Nothing below imports from here."""

import argparse
from pathlib import Path

from core.settings import PROJECT_ROOT

SAMPLE_DATA = PROJECT_ROOT.parent / "shared" / "data"
"""The team's sample datasets (``fruits360/``, ``grocerystore/``), beside the checkout; never copied into it."""
FRUITS360_SAMPLE = SAMPLE_DATA / "fruits360"
GROCERYSTORE_SAMPLE = SAMPLE_DATA / "grocerystore"


def tool_parser(prog: str, doc: str | None, test_split: bool = False) -> argparse.ArgumentParser:
    """The argument parser of a development tool: its module docstring, as written, is its
    ``--help``; with ``test_split``, the ``--data`` option of the tools that stream a
    dataset's Test split through the pipeline."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if test_split:
        parser.add_argument("--data", type=Path, default=FRUITS360_SAMPLE, help="dataset root (uses its Test split)")
    return parser
