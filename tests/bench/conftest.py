"""Fixtures for the benchmark tests: a small haystack folder of our own text."""
from __future__ import annotations

import pytest

_SENTENCES = [
    "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape.",
    "In the winter of the great storm he wrote that forty-one vessels sought shelter in the bay.",
    "The harbour master counted them twice because he did not believe the number.",
    "The ledger is kept today in the town museum, beside a brass telescope and a map.",
    "Visitors ask most often about the telescope, which was made in Glasgow in 1881 and still works.",
]


@pytest.fixture(scope="session")
def haystack_dir(tmp_path_factory):
    """Two .txt files of plain prose (a few thousand tokens for the tiny tokenizer)."""
    d = tmp_path_factory.mktemp("haystack")
    for i in range(2):
        paras = [" ".join(_SENTENCES[k % 5 :] + _SENTENCES[: k % 5]) for k in range(i, i + 12)]
        (d / f"essay{i}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return d
