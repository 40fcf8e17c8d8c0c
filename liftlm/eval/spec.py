"""What an evaluation run depends on besides the LIFT settings (``LiftConfig``): the ``EvalSpec``.

    spec = EvalSpec(benchmark="longbench", data="LongBench/", out=Path("runs/lb"), options=QAOptions(),
                    methods=("icl", "lift+icl"))

The benchmark's own settings (its tasks, or the grid of documents it builds) sit in ``options``, an object of
the benchmark's options class (``benchmarks.QAOptions``, ``NiahOptions``, ``RulerOptions``, ``FactsOptions``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import MODES, LiftConfig

ORACLE = "oracle"  # the base model with the whole document in context: the upper bound of in-context reading
METHODS = (*MODES, ORACLE)
DEFAULT_METHODS = ("icl", "lift", "lift+icl")


class Options(Protocol):
    """A benchmark's own settings, as ``run.json`` records them."""

    def identity(self) -> dict:
        """What the examples depend on, beside the run's common identity (``max_doc_tokens`` among them)."""

    def run_fields(self) -> dict:
        """The ``run.json`` fields: any of ``tasks``, ``documents``, ``max_doc_tokens`` and ``grid``."""


@dataclass
class EvalSpec:
    """Everything an evaluation run depends on besides the LIFT settings (``LiftConfig``)."""

    benchmark: str  # a name in ``benchmarks.BENCHMARKS``
    data: str | None  # the benchmark's files (loogle, longbench) or the haystack folder (niah, ruler, facts)
    out: Path
    options: Options  # the benchmark's own settings
    methods: tuple[str, ...] = DEFAULT_METHODS
    limit: int | None = None  # questions per task
    max_new_tokens: int | None = None  # None: the task's own generation limit
    data_seed: int = 0  # seed of the first built document (ruler, facts)
    judge: str | None = None
    # the machinery
    model: str | None = None
    store: str | None = None
    device: str | None = None
    force: bool = False
    progress: bool = True
    rag_chunk_tokens: int = 128
    argv: list[str] = field(default_factory=list)

    def identity(self, config: LiftConfig) -> dict:
        """What the recorded results depend on: a rerun into the same ``--out`` must match it."""
        extra = self.options.identity()
        return {
            "benchmark": self.benchmark,
            "data": self.data,
            "model": self.model,
            "settings": config.training_dict(),
            "max_doc_tokens": extra.pop("max_doc_tokens", None),
            "max_new_tokens": self.max_new_tokens,
            # the answer-time settings (not in the store key) where not at their defaults: earlier runs keep theirs
            **config.answer_dict(),
            **extra,
        }
