"""No committed answer echoes a chat template's default system prompt (issue 12).

Contextualized samples built through a chat template that inserts a default system turn taught the model to
recite that turn; raw-text samples (``ct_format raw``, the default) cannot. Every committed prediction file is
scanned for the default system prompts of the models we run. The one run that shows the failure is kept as the
record of it (docs/results.md describes it) and must predate the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
DEFAULT_SYSTEM_PROMPTS = (
    "You are a helpful AI assistant named SmolLM",  # SmolLM2's template
    "You are Qwen, created by Alibaba Cloud",  # Qwen2.5's template
)
# the record of the failure: measured with chat-format contextualized samples, before --ct-format raw existed
BEFORE_THE_FIX = {"eval/loogle/predictions.jsonl"}


def answer_files() -> list[Path]:
    return sorted(p for p in RESULTS.rglob("*.jsonl"))


def echoes(path: Path) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        text = json.dumps(json.loads(line), ensure_ascii=False).lower()  # every field: answers, judge replies
        out += [f"line {n}: {p!r}" for p in DEFAULT_SYSTEM_PROMPTS if p.lower() in text]
    return out


def test_there_are_committed_answers_to_check():
    assert len(answer_files()) >= 10


@pytest.mark.parametrize("path", answer_files(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_no_committed_answer_echoes_a_system_prompt(path):
    found = echoes(path)
    rel = str(path.relative_to(RESULTS).as_posix())
    if rel in BEFORE_THE_FIX:
        assert found, f"{rel} no longer shows the failure: drop it from BEFORE_THE_FIX"
        settings = json.loads((path.parent / "run.json").read_text())["identity"]["settings"]
        assert "ct_format" not in settings  # measured before raw contextualized samples existed
    else:
        assert not found, f"{rel} echoes a chat template's default system prompt: {found[:3]}"
