"""Fixtures for the evaluation-harness tests: where the shared benchmark data lives, and a small haystack."""

from __future__ import annotations

from pathlib import Path

import pytest

# The shared data sits beside the repo: <parent of repo root>/shared/data.
SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"

# Our own sentences; '3.5' and 'e.g' give '.' tokens that do not end a sentence.
_SENTENCES = [
    "The keeper climbed the stairs at dusk and lit the lamp.",
    "Ships passed the cape in the night, some of them 3.5 miles out.",
    "In the morning he wrote their names in the ledger.",
    "His daughter drew a map of the fjord, with every rock marked.",
    "The telescope from Glasgow still works today.",
    "Visitors ask about it more than about the ledger.",
]


@pytest.fixture(scope="session")
def haystack() -> str:
    """About 12k characters of plain English prose (paragraphs of the sentences above)."""
    paras = []
    for i in range(40):
        order = _SENTENCES[i % 6 :] + _SENTENCES[: i % 6]
        paras.append(" ".join(order))
    return "\n\n".join(paras)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared benchmark data folder; the test is skipped when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
