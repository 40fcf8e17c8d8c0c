"""The work folder of a cost run (``liftlm bench cost --out DIR``): the rows it has finished and its teacher items,
so that a long run cut short resumes where it stopped (``DIR/.cost-work``, removed once the report is written)."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ..config import ANSWER_FIELDS, LiftConfig

WORK_DIR = ".cost-work"


def teacher_cache(cache: Path, cfg: LiftConfig) -> Path:
    """A teacher's item cache in the run's: one per width (its items are the same, its calls are not)."""
    return cache / f"teacher-batch-{cfg.teacher_batch or 'auto'}"


def row_key(loaded, recipe, text: str, given) -> str:
    """What makes a row the same measurement: the model, device, document, recipe and its settings (all but the
    answer-time ones, ``ANSWER_FIELDS``, which no internalization depends on), and any given teacher."""
    settings = {k: v for k, v in recipe.config.resolved_dict().items() if k not in ANSWER_FIELDS}
    what = {"model": loaded.model_id, "device": str(loaded.device),
            "document": hashlib.sha256(text.encode()).hexdigest(),
            "recipe": recipe.name, "settings": settings,
            "given": None if given is None else [given.path, given.trace is not None]}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


class Work:
    """A cost run's work folder: its item cache (``items/``) and its finished rows (``rows.jsonl``, each with its
    key), which a rerun of the same settings keeps. A teacher cut short left a record to resume from; it is
    dropped, so that the row is timed again from its start."""

    def __init__(self, root: Path, progress: bool):
        from ..fileio import read_jsonl

        self.root, self.items, self.rows = root, root / "items", root / "rows.jsonl"
        self.done = {r["key"]: {k: v for k, v in r.items() if k != "key"}
                     for r in read_jsonl(self.rows, flag="the cost run's record of finished rows")}
        for partial in self.items.rglob("*.partial.jsonl"):
            partial.unlink()
        if self.done and progress:
            print(f"liftlm: resuming the cost run in {root}: {len(self.done)} rows measured before are kept",
                  file=sys.stderr, flush=True)

    def keep(self, key: str, row: dict) -> None:
        from ..fileio import append_jsonl

        self.root.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.rows, {"key": key, **row})

    def _teacher_items(self, loaded, cfg: LiftConfig, text: str) -> Path:
        from ..distill import DistillSource

        return DistillSource(cfg, loaded.model_id, teacher_cache(self.items, cfg)).cache_path(text)

    def fresh_teacher(self, loaded, recipe, text: str, teachers: dict) -> None:
        """Before a row is measured: items a teacher of an unfinished row left in the cache (it finished, and the
        run stopped in its student) are dropped, so that the teacher runs and is timed again; items of a finished
        row (``teachers``) stay, for a recipe that shares them."""
        if recipe.config.objective != "ct":
            path = self._teacher_items(loaded, recipe.config, text)
            if path not in teachers:
                path.unlink(missing_ok=True)

    def restore_teacher(self, loaded, recipe, text: str, row: dict, teachers: dict) -> None:
        """A kept row's teacher, for a later recipe with the same items (its cache must still hold them)."""
        if recipe.config.objective == "ct" or {"shared_with", "given", "replayed"} & row["teacher"].keys():
            return
        path = self._teacher_items(loaded, recipe.config, text)
        if path.is_file():
            teachers[path] = (recipe.name, row["teacher"])
