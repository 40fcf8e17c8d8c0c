"""``liftlm bench serve`` on the tiny model: a real server, three adapters, an LRU bound of two."""
from __future__ import annotations

import json

import pytest

from liftlm.bench.serve import (
    ServeBenchOptions,
    example_documents,
    markdown,
    percentile,
    run_serve_bench,
    write_report,
)


def test_percentile_and_documents():
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    docs = example_documents(8, 50)
    assert len(set(docs)) == 8 and all(len(d.split()) > 50 for d in docs)


def test_bench_serve_on_the_tiny_model(tiny_model_dir, tmp_path):
    opts = ServeBenchOptions(model=str(tiny_model_dir), out=tmp_path / "bench", documents=3, doc_words=40,
                             questions=6, warmup=2, max_tokens=4, lru_bounds=[2], progress=False,
                             lift_flags=["--objective", "ct", "--window", "256", "--segment-length", "32", "--context-tokens", "32",
                                         "--epochs", "1"])
    report = run_serve_bench(opts)
    rows = {r["scenario"]: r for r in report["rows"]}
    assert set(rows) == {"icl (no adapter)", "one adapter", "round-robin 3"}
    for r in rows.values():
        assert r["answers_per_second"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"] and r["questions"] == 6
        assert 0 < r["completion_tokens"] <= 6 * 4
    assert rows["icl (no adapter)"]["adapter_loads"] == 0
    assert rows["one adapter"]["adapter_loads"] == 0  # loaded once in the warm-up, then kept
    # 3 documents over 2 slots: after the warm-up (documents 0 and 1 loaded), documents 0 and 1 hit and every
    # later question evicts the one it needs next
    assert rows["round-robin 3"]["adapter_loads"] == 4
    write_report(report, opts.out, "liftlm bench serve --documents 3")
    saved = json.loads((opts.out / "results.json").read_text())
    assert saved["command"] == "liftlm bench serve --documents 3" and len(saved["rows"]) == 3
    assert "round-robin 3" in markdown(report) and (opts.out / "summary.md").is_file()


def test_bench_serve_flag_errors(capsys):
    from liftlm.cli import main

    assert main(["bench", "serve", "--lru-bounds", "8,x"]) == 2
    assert "--lru-bounds" in capsys.readouterr().err
    assert main(["bench", "serve", "--epochs", "-1"]) == 2
    assert "--epochs" in capsys.readouterr().err
