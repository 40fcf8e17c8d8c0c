"""The scaling benchmark on the tiny model: rows, statuses, output files, a point in a fresh process, the CLI."""
from __future__ import annotations

import json

import pytest

from liftlm.bench.cli import bench_config
from liftlm.bench.common import check_random_size, haystack_ids, load_tokenizer
from liftlm.bench.scaling import ROW_KEYS, STATUSES, ScalingOptions, point_spec, replot, run_scaling, spawn
from liftlm.config import LiftConfig
from liftlm.errors import LiftError

TINY_LIFT = LiftConfig(objective="ct", epochs=1, segment_length=32, context_tokens=32, lora_rank=4)


def options(tiny_model_dir, haystack_dir, out, **kw) -> ScalingOptions:
    base = {"lengths": [96, 192], "model": str(tiny_model_dir), "haystack": str(haystack_dir), "out": out,
                "config": TINY_LIFT, "answer_tokens": 4, "threads": 1, "in_process": True, "progress": False}
    return ScalingOptions(**{**base, **kw})


def check_schema(rows):
    assert isinstance(rows, list) and rows
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        assert r["status"] in STATUSES and r["method"] in ("lift", "icl") and isinstance(r["length"], int)
        if r["status"] == "ok":
            assert r["seconds"] > 0 and r["peak_rss_mb"] > 0


def test_two_lengths_in_process_write_every_output(tiny_model_dir, haystack_dir, tmp_path):
    out = tmp_path / "run"
    summary = run_scaling(options(tiny_model_dir, haystack_dir, out))
    rows = json.loads((out / "results.json").read_text())
    check_schema(rows)
    assert [(r["method"], r["length"], r["status"]) for r in rows] == [
        ("lift", 96, "ok"), ("icl", 96, "ok"), ("lift", 192, "ok"), ("icl", 192, "ok")]
    lift = [r for r in rows if r["method"] == "lift"]
    assert lift[1]["samples"] > lift[0]["samples"] and lift[1]["tokens"] > lift[0]["tokens"]
    assert all(r["threads"] == 1 for r in rows)
    icl = [r for r in rows if r["method"] == "icl"]
    assert all(r["tokens"] == r["prompt_tokens"] + 4 and r["prefill_seconds"] <= r["seconds"] for r in icl)
    for name in ("summary.json", "summary.md", "scaling.png", "run.json"):
        assert (out / name).is_file(), name
    assert summary["fits"]["lift"]["n"] == 2 and summary["fits"]["icl"]["coef"] is None  # 2 points: no quadratic
    assert json.loads((out / "summary.json").read_text())["rows"] == rows
    (out / "scaling.png").unlink()
    replot(out)
    assert (out / "scaling.png").is_file()


def test_icl_beyond_the_window_is_recorded_not_skipped(tiny_model_dir, haystack_dir, tmp_path):
    # the tiny model's window is 1024 tokens
    opts = options(tiny_model_dir, haystack_dir, tmp_path, lengths=[1100], methods=("icl",))
    row = run_scaling(opts)["rows"][0]
    assert row["status"] == "over_window" and row["seconds"] is None and "window 1024" in row["detail"]
    opts = options(tiny_model_dir, haystack_dir, tmp_path, lengths=[1100], methods=("icl",),
                   icl_beyond_window=True)
    row = run_scaling(opts)["rows"][0]
    assert row["status"] == "ok" and row["prompt_tokens"] > 1024


def test_a_point_in_a_fresh_process(tiny_model_dir, haystack_dir, tmp_path):
    opts = options(tiny_model_dir, haystack_dir, tmp_path, lengths=[64], methods=("lift",), in_process=False)
    row = run_scaling(opts)["rows"][0]
    assert row["status"] == "ok", row
    assert row["peak_rss_mb"] >= row["work_peak_rss_mb"] > 0 and row["base_rss_mb"] > 0
    assert (tmp_path / "points" / "lift-64.row.json").is_file()


def test_a_point_past_its_timeout_is_recorded(tiny_model_dir, haystack_dir, tmp_path):
    spec = point_spec(options(tiny_model_dir, haystack_dir, tmp_path), "icl", 64)
    row = spawn(spec, tmp_path, timeout=0.01)
    assert row["status"] == "timeout" and row["seconds"] is None


def test_random_weights_with_a_synthetic_tokenizer(haystack_dir, tmp_path):
    opts = ScalingOptions(lengths=[128], methods=("lift", "icl"), haystack=str(haystack_dir), out=tmp_path,
                          config=TINY_LIFT, random_config="tiny", tokenizer="synthetic", answer_tokens=2,
                          threads=1, in_process=True, progress=False)
    summary = run_scaling(opts)
    assert [r["status"] for r in summary["rows"]] == ["ok", "ok"]
    assert summary["meta"]["model"] == "random-weights:tiny"


def test_big_random_models_are_refused_on_a_cpu():
    with pytest.raises(LiftError, match="--force"):
        check_random_size("llama-3-8b", "cpu", force=False)
    check_random_size("llama-3-8b", "cpu", force=True)
    check_random_size("llama-3-8b", "cuda", force=False)
    with pytest.raises(LiftError, match="unknown architecture"):
        check_random_size("gpt-5", "cuda", force=False)


def test_haystack_is_repeated_when_short(tiny_model_dir, haystack_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    ids, repeated = haystack_ids(tok, "short text. " * 3, 200)
    assert len(ids) == 200 and repeated
    ids, repeated = haystack_ids(tok, (haystack_dir / "essay0.txt").read_text(), 100)
    assert len(ids) == 100 and not repeated


def test_bad_input_is_a_lift_error(tiny_model_dir, haystack_dir, tmp_path):
    with pytest.raises(LiftError, match="--methods"):
        run_scaling(options(tiny_model_dir, haystack_dir, tmp_path, methods=("rag",)))
    with pytest.raises(LiftError, match="--haystack"):
        run_scaling(options(tiny_model_dir, tmp_path / "nowhere", tmp_path))


def test_cli_flags_fit_the_liftlm_parser():
    from liftlm.cli import build_parser

    parser = build_parser()  # the bench verb is registered by the main CLI
    args = parser.parse_args(["bench", "scaling", "--lengths", "1k,2k", "--segment-length", "128"])
    assert args.verb == "bench" and args.bench_verb == "scaling" and args.methods == "lift,icl"
    cfg = bench_config(args)
    assert cfg.epochs == 1 and cfg.segment_length == 128 and cfg.lora_rank == LiftConfig().lora_rank
    assert cfg.objective == "ct"  # the benchmarks time the paper's segment training, whatever LIFT's default
    with pytest.raises(LiftError, match="--objective"):
        bench_config(parser.parse_args(["bench", "scaling", "--objective", "distill"]))
    args = parser.parse_args(["bench", "throughput", "--random-weights", "--config", "llama-3-8b", "--epochs", "2"])
    assert args.config == "llama-3-8b" and bench_config(args).epochs == 2


def test_cli_refuses_config_without_random_weights(tmp_path, capsys):
    from liftlm.bench.cli import main

    assert main(["scaling", "--config", "tiny", "--out", str(tmp_path)]) == 2
    assert "--random-weights" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["overlap", "recurrent"])
def test_lift_points_in_the_overlap_aware_modes(tiny_model_dir, haystack_dir, tmp_path, mode):
    cfg = LiftConfig(**{**TINY_LIFT.to_dict(), "training_mode": mode})
    run_scaling(options(tiny_model_dir, haystack_dir, tmp_path / mode, config=cfg, methods=["lift"]))
    rows = json.loads((tmp_path / mode / "results.json").read_text())
    assert [(r["length"], r["status"]) for r in rows] == [(96, "ok"), (192, "ok")]
    assert [r["tokens"] for r in rows] == [96, 192]  # each document token trained once in one epoch
