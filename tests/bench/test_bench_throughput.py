"""The throughput benchmark on the tiny model: both loops, the ratio, the probe and the FLOP counts."""
from __future__ import annotations

import json

import pytest

from liftlm.bench.cli import main
from liftlm.bench.common import matmul_probe
from liftlm.bench.throughput import detailed_flops, kept_positions, matmul_weights
from liftlm.context import IGNORE_INDEX, Sample


def test_throughput_smoke_prints_the_ratio(tiny_model_dir, haystack_dir, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    status = main(["throughput", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "160",
                   "--segment-length", "32", "--context-tokens", "32", "--lora-rank", "4", "--threads", "1",
                   "--warmup", "1", "--quiet", "--json-out", str(report_path)])
    assert status == 0
    out = capsys.readouterr().out
    for text in ("trainer (liftlm.train.train)", "bare forward+backward loop", "ratio trainer / bare",
                 "matmul probe", "ceiling"):
        assert text in out
    r = json.loads(report_path.read_text())
    assert r["trainer_tokens_per_second"] > 0 and r["bare_tokens_per_second"] > 0
    assert r["ratio"] == pytest.approx(r["trainer_tokens_per_second"] / r["bare_tokens_per_second"], rel=1e-3)
    assert r["runs"]["trainer"][0]["tokens"] == r["runs"]["bare"][0]["tokens"] == r["tokens_per_pass"]
    assert r["flops_per_token"] == 4 * r["matmul_weights"]["total"]
    assert r["fraction_of_ceiling"] == pytest.approx(
        r["trainer_tokens_per_second"] / r["ceiling_tokens_per_second"], rel=1e-2)
    assert r["threads"] == 1 and r["samples"] > 1


def test_matmul_weights_and_flops(tiny_loaded):
    model = tiny_loaded.model
    w = matmul_weights(model)
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    per_layer = 2 * c.hidden_size**2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
    assert w["body"] == c.num_hidden_layers * per_layer
    assert w["head"] == c.vocab_size * c.hidden_size and w["tied_embeddings"]
    s = Sample([1] * 10, [IGNORE_INDEX] * 6 + [1] * 4)
    assert kept_positions(s.labels) == 5
    flops = detailed_flops([s], w, c, lora_params=0)
    attention = 2 * c.hidden_size * 10 * 11 * c.num_hidden_layers
    assert flops == 2 * (2 * w["body"] * 10 + 2 * w["head"] * 5) + 3 * attention


def test_matmul_probe_reports_gflops():
    p = matmul_probe("cpu", size=64, seconds=0.01, rounds=1)
    assert p["gflops"] > 0 and p["size"] == 64 and p["dtype"] == "float32"


def test_throughput_refuses_the_other_training_modes(tiny_model_dir, haystack_dir, capsys):
    status = main(["throughput", "--model", str(tiny_model_dir), "--haystack", str(haystack_dir), "--tokens", "160",
                   "--training-mode", "recurrent", "--quiet"])
    assert status != 0 and "--training-mode paper" in capsys.readouterr().err
