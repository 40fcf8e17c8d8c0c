"""The time estimate ``liftlm internalize`` prints before training (``liftlm.estimate``): it reproduces the committed
cost measurements, scales as the recipe does, and is said for long documents only."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from liftlm.config import LiftConfig
from liftlm.errors import LiftError
from liftlm.estimate import Estimate, estimate

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
COST_RUNS = ["cost-embedded", "cost-qwen1.5b", "cost-qwen1.5b-batch"]
ATTENTION = {"cost-embedded": 30 * 9 * 64, "cost-embedded-packed": 30 * 9 * 64, "cost-qwen1.5b-packed": 28 * 12 * 128, "cost-qwen1.5b": 28 * 12 * 128, "cost-embedded-levers": 30 * 9 * 64,
             "cost-qwen1.5b-batch": 28 * 12 * 128}  # layers × heads × head size
TEXT = ("The ferry at Varnholm was painted ochre by Ilsa Brandt in 1931. The keeper's ledger lists forty-one "
        "ships that sheltered in the bay during the great storm. A brass telescope from Glasgow stands beside it. ")


def recorded(settings: dict) -> LiftConfig:
    """The settings a run recorded; one recorded before ``pack_batches`` existed padded its batches."""
    return LiftConfig.from_dict({"pack_batches": False, **settings})


def measured(run: str) -> list[tuple[dict, dict, Estimate]]:
    """(the run's report, a recipe's row, the estimate for it from the run's own W and probe GFLOP/s)."""
    report = json.loads((RESULTS / run / "cost.json").read_text())
    out = []
    for row in report["recipes"]:
        cfg = recorded(row["settings"])
        out.append((report, row, estimate(report["document_tokens"], cfg, report["matmul_weights"],
                                          report["probe"]["gflops"], row["settings"]["window"],
                                          attention=ATTENTION[run])))
    return out


@pytest.mark.parametrize("run", COST_RUNS)
def test_the_estimate_reproduces_the_cost_measurements(run):
    rows = measured(run)
    for _, row, guess in rows:  # every recipe, the default and the cheaper ones, within ±35 %
        assert guess.teacher_s == pytest.approx(row["teacher"]["seconds"], rel=0.35), row["recipe"]
        assert guess.student_s == pytest.approx(row["student"]["seconds"], rel=0.35), row["recipe"]
        assert guess.total_s == pytest.approx(row["seconds"], rel=0.35), row["recipe"]
    if run == "cost-qwen1.5b-batch":  # a later teacher (shared chunk keys/values): fewer tokens, seconds as above
        return
    _, row, guess = next(r for r in rows if r[1]["recipe"] == "default")
    assert guess.teacher_tokens == pytest.approx(row["teacher"]["tokens"], rel=0.1)
    assert guess.student_tokens == pytest.approx(row["student"]["tokens"], rel=0.1)
    assert guess.prefix_tokens == pytest.approx(row["student"]["prefix_tokens"], rel=0.1)
    assert guess.items == pytest.approx(row["teacher_report"]["items"], rel=0.1)


def test_batches_of_8_are_counted_at_the_speed_measured_for_them():
    """The student's batches of 8 (the distillation default) train the same tokens faster: 1.50× on the embedded
    model (cost-embedded-levers), 1.19× on Qwen 1.5B (cost-qwen1.5b-batch); the estimate follows both runs' rows."""
    for run in ("cost-embedded-levers", "cost-qwen1.5b-batch"):
        report = json.loads((RESULTS / run / "cost.json").read_text())
        rows = {row["recipe"]: row for row in report["recipes"]}
        for name in ("default", "batch-8"):
            cfg = recorded(rows[name]["settings"])
            guess = estimate(report["document_tokens"], cfg, report["matmul_weights"], report["probe"]["gflops"],
                             512, attention=ATTENTION[run])
            assert guess.student_s == pytest.approx(rows[name]["student"]["seconds"], rel=0.15), (run, name)
    one, eight = (estimate(8000, LiftConfig(batch_size=b), 10**9, 200.0, window=512) for b in (1, 8))
    assert one.student_tokens == eight.student_tokens and one.student_s > eight.student_s
    assert estimate(8000, LiftConfig(batch_size=32), 10**9, 200.0, window=512).student_s == eight.student_s


def test_batches_of_about_one_length_are_counted_at_the_speed_measured_for_them():
    """--group-by-length: the student as the embedded model's cost run measured it (53.2 s in the epoch's order,
    46.7 s grouped, the same trained tokens); the teacher unchanged, and nothing for one sample a step."""
    report = json.loads((RESULTS / "cost-embedded-grouped" / "cost.json").read_text())
    plain, grouped = (estimate(2000, recorded(row["settings"]), report["matmul_weights"],
                               report["probe"]["gflops"], 512, attention=30 * 9 * 64) for row in report["recipes"])
    measured = [row["student"]["seconds"] for row in report["recipes"]]
    # (the gain applies to the trained tokens, not to the views computed: 1.10x of the measured 1.14x)
    assert plain.student_s / grouped.student_s == pytest.approx(measured[0] / measured[1], rel=0.05)
    assert plain.teacher_s == grouped.teacher_s
    one = [estimate(2000, LiftConfig(batch_size=1, group_by_length=g, pack_batches=False), 10**8, 200.0, 512).student_s
           for g in (False, True)]
    assert one[0] == one[1]


@pytest.mark.parametrize("run", ["cost-embedded-packed", "cost-qwen1.5b-packed"])
def test_packed_batches_are_counted_at_the_speed_measured_for_them(run):
    """--pack-batches (the default): the student as each model's cost run measured it, padded against packed on
    the same teacher items; the teacher unchanged; grouping by length is for padded rows only, and nothing counts
    for one sample a step."""
    report = json.loads((RESULTS / run / "cost.json").read_text())
    padded, packed = (estimate(2000, recorded(row["settings"]), report["matmul_weights"], report["probe"]["gflops"],
                               512, attention=ATTENTION[run]) for row in report["recipes"])
    measured = [row["student"]["seconds"] for row in report["recipes"]]
    assert [row["settings"]["pack_batches"] for row in report["recipes"]] == [False, True]
    # (the gain applies to the trained tokens, not to the views computed)
    assert padded.student_s / packed.student_s == pytest.approx(measured[0] / measured[1], rel=0.08)
    assert padded.teacher_s == packed.teacher_s
    with pytest.raises(LiftError, match="--no-pack-batches"):  # grouping orders padded rows only
        dataclasses.replace(recorded(report["recipes"][1]["settings"]), group_by_length=True)
    one = [estimate(2000, LiftConfig(batch_size=1, pack_batches=p), 10**8, 200.0, 512).student_s for p in (False, True)]
    assert one[0] == one[1]


def test_the_chunk_view_costs_a_view_of_samples_and_each_chunk_once_an_epoch():
    two = estimate(8000, LiftConfig(), 10**9, 200.0, window=512, attention=28 * 12 * 128)
    three = estimate(8000, LiftConfig(distill_views="lift+icl,lift,lift+chunk"), 10**9, 200.0, window=512,
                     attention=28 * 12 * 128)
    icl = estimate(8000, LiftConfig(distill_views="lift+icl"), 10**9, 200.0, window=512)
    assert three.student_tokens - two.student_tokens == icl.student_tokens  # trained as the head+tail view's
    assert three.items == two.items and three.teacher_s == two.teacher_s  # the same items, no more teacher
    assert three.student_steps - two.student_steps == 2 * three.chunks  # ~7 items a chunk: a batch each, 2 epochs
    assert three.prefix_tokens - two.prefix_tokens >= 2 * three.chunks * 256
    assert 1.3 < three.student_s / two.student_s < 1.8


def test_the_estimate_grows_linearly_with_a_long_document():
    cfg = LiftConfig()
    short, long = (estimate(n, cfg, 10**9, 200.0, window=4096) for n in (40_000, 80_000))
    assert long.teacher_s / short.teacher_s == pytest.approx(2, rel=0.05)
    assert long.student_s / short.student_s == pytest.approx(2, rel=0.05)
    assert long.chunks / short.chunks == pytest.approx(2, rel=0.01)


def test_the_teacher_is_left_out_for_ct_and_for_cached_items():
    ct = estimate(8000, LiftConfig(objective="ct"), 10**9, 200.0, window=512)
    assert ct.teacher_s == 0 and ct.teacher == "none" and ct.student_s > 0
    assert "no teacher" in ct.describe()
    cached = estimate(8000, LiftConfig(), 10**9, 200.0, window=512, teacher=False)
    fresh = estimate(8000, LiftConfig(), 10**9, 200.0, window=512)
    assert cached.teacher_s == 0 and cached.student_s == fresh.student_s and fresh.teacher_s > 0
    assert "cached" in cached.describe()


def test_one_view_or_one_epoch_about_halves_the_student():
    cfg = LiftConfig()
    full = estimate(8000, cfg, 10**9, 200.0, window=512)
    for fewer in (dataclasses.replace(cfg, epochs=1), dataclasses.replace(cfg, distill_views="lift+icl"),
                  dataclasses.replace(cfg, distill_views="lift")):
        half = estimate(8000, fewer, 10**9, 200.0, window=512)
        assert half.student_s / full.student_s == pytest.approx(0.5, abs=0.1), fewer.distill_views
        assert half.teacher_s == full.teacher_s  # the same items


def test_with_no_prompts_per_chunk_the_clozes_are_counted_with_their_short_answers():
    from liftlm.estimate import CLOZE_ANSWER, CLOZES_PER_SENTENCE

    lean = LiftConfig(distill_prompts=0, distill_questions=0, distill_cloze=True)
    out = estimate(8000, lean, 10**9, 200.0, window=512)
    clozes = out.sentences * CLOZES_PER_SENTENCE
    assert out.sentences > 0 and out.asks == round(clozes / (1 - lean.distill_retention))
    default = estimate(8000, LiftConfig(), 10**9, 200.0, window=512)
    assert out.teacher_s < default.teacher_s / 2 and out.student_s < default.student_s / 4
    # a cloze's answer is short: its samples cost less than the retention answers' (32 tokens)
    longer = estimate(8000, dataclasses.replace(lean, distill_answer_tokens=64), 10**9, 200.0, window=512)
    assert CLOZE_ANSWER < lean.distill_answer_tokens
    assert longer.student_tokens - out.student_tokens < 0.5 * out.student_tokens
    three = estimate(8000, dataclasses.replace(lean, distill_blanks=3), 10**9, 200.0, window=512)
    assert 1.8 < three.asks / out.asks < 2.2 and three.student_s > out.student_s
    # with slots (--distill-prompts > 0) the clozes take the place of other prompts: the same count
    assert estimate(8000, LiftConfig(distill_cloze=True), 10**9, 200.0, window=512).asks == default.asks


def test_the_line_says_the_total_its_parts_and_the_rate():
    guess = Estimate(8000, 150.0, teacher_s=240, student_s=600, teacher="runs")
    assert guess.describe() == ("estimated time: ~14 min (teacher ~4 min, student ~10 min) for 8,000 tokens at "
                                "~150 GFLOP/s")
    assert "~45 s" in Estimate(10, 150.0, 20, 25, "runs").describe()
    assert "~2.5 h" in Estimate(10, 150.0, 3000, 6000, "runs").describe()


def test_a_resumed_student_says_what_is_left():
    guess = Estimate(8000, 150.0, teacher_s=0, student_s=6000, teacher="cached", student_done=0.25)
    assert guess.total_s == 4500
    assert guess.describe() == ("estimated time: ~75 min (the teacher's items are cached; student ~75 min left: it "
                                "resumes 25 % in) for 8,000 tokens at ~150 GFLOP/s")


def test_the_constants_follow_the_code_they_describe():
    import liftlm.bench.common
    import liftlm.bench.throughput
    import liftlm.estimate
    import liftlm.probe
    from liftlm.distill.student import PREFIX_REFRESH, PREFIX_TOKENS_PER_REUSE

    assert liftlm.estimate.PREFIX_REFRESH == PREFIX_REFRESH
    assert liftlm.estimate.PREFIX_TOKENS_PER_REUSE == PREFIX_TOKENS_PER_REUSE
    assert liftlm.bench.common.matmul_probe is liftlm.probe.matmul_probe  # the benchmarks' imports keep working
    assert liftlm.bench.throughput.matmul_weights is liftlm.estimate.matmul_weights
    probe = liftlm.probe.matmul_probe("cpu", size=64, seconds=0.01, rounds=1)
    assert probe["gflops"] > 0 and probe["size"] == 64


def test_internalize_says_the_estimate_for_a_long_document_only(tiny_model_dir, tmp_path, capsys):
    from liftlm import Lift

    cfg = LiftConfig(window=128, segment_length=48, stride=48, context_tokens=32, epochs=1, distill_prompts=1,
                     distill_answer_tokens=3, distill_questions=0, distill_retention=0.1)
    lift = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=True)
    long = TEXT * 2
    count = lambda text: len(lift.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    assert count(long) > lift.window >= count(TEXT)
    lift.internalize(long)
    lines = [x for x in capsys.readouterr().err.splitlines() if "estimated time:" in x]
    assert len(lines) == 1 and lines[0].startswith("liftlm: estimated time: ~")
    assert "teacher ~" in lines[0] and "student ~" in lines[0]
    assert "estimated time" not in _internalize_err(lift, long, capsys)  # the stored adapter: no training
    assert "estimated time" not in _internalize_err(lift, TEXT, capsys)  # a short document: seconds
    # another store shares the teacher's cache beside it: the teacher is left out
    again = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store2", progress=True)
    assert "the teacher's items are cached" in _internalize_err(again, long, capsys)
    quiet = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store3", progress=False)
    assert "estimated time" not in _internalize_err(quiet, long, capsys)  # the library, quiet


def test_a_resumed_internalize_estimates_what_is_left(tiny_model_dir, tmp_path, capsys):
    """Interrupted in its second epoch, the rerun's estimate counts only the student's samples its checkpoint
    does not hold."""
    from liftlm import Lift

    cfg = LiftConfig(window=128, segment_length=48, stride=48, context_tokens=32, epochs=2, distill_prompts=1,
                     distill_answer_tokens=3, distill_questions=0, distill_retention=0.1)
    long = TEXT * 2

    def stop(progress):
        if progress.stage == "training" and progress.epoch == 1:
            raise KeyboardInterrupt

    first = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=True, on_step=stop)
    with pytest.raises(KeyboardInterrupt):
        first.internalize(long)
    whole = next(x for x in capsys.readouterr().err.splitlines() if "estimated time:" in x)
    again = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=True)
    line = next(x for x in _internalize_err(again, long, capsys).splitlines() if "estimated time:" in x)
    assert "the teacher's items are cached; student ~" in line and "left: it resumes 50 % in" in line, line
    assert "left" not in whole


def _internalize_err(lift, text: str, capsys) -> str:
    lift.internalize(text)
    return capsys.readouterr().err


def test_a_wide_window_counts_the_attention_to_the_view_and_reuses_the_view_by_its_length(tiny_loaded):
    """At a wide window the student's tokens attend to a long head+tail view: the estimate counts that attention
    (A = layers × heads × head size), and the view computed once per ~64 of its tokens (``refresh_after``)."""
    from liftlm.estimate import attention_width

    config = tiny_loaded.model.config
    assert attention_width(tiny_loaded.model) == config.num_hidden_layers * config.hidden_size
    assert attention_width(object()) == 0
    by_length, every_8 = (estimate(16_000, LiftConfig(prefix_refresh=r), 10**8, 200.0, window=8192, attention=10**4)
                          for r in (None, 8))
    assert every_8.prefix_tokens / by_length.prefix_tokens == pytest.approx(8_090 // 64 / 8, rel=0.15)  # (rounded up)
    assert by_length.student_s < every_8.student_s / 2
    plain = estimate(16_000, LiftConfig(), 10**8, 200.0, window=8192)
    assert plain.attention_flops == plain.view_flops == 0 and by_length.student_s > 1.5 * plain.student_s
    narrow, narrow_plain = (estimate(16_000, LiftConfig(), 10**8, 200.0, window=512, attention=a) for a in (10**4, 0))
    assert narrow.student_s < 1.2 * narrow_plain.student_s  # a few per cent at window 512


def test_the_estimate_reproduces_the_wide_window_run():
    """The 16k-token RULER run at the embedded model's own window (view of 7,696 tokens): 3.3 s a sample with the
    view computed every 8 samples (its first 174 samples), 1.6 s reused by its length (3,265 s for 2,052)."""
    run = json.loads((RESULTS / "eval" / "ruler-embedded-16k" / "run.json").read_text())
    assert run["window"] == 8192
    per_sample = {}
    for refresh in (None, 8):
        guess = estimate(16_000, LiftConfig(prefix_refresh=refresh, batch_size=1, learning_rate=2e-4), 134_479_872,
                         195.0, 8192, teacher=False,
                         chat_before=24, chat_after=6, attention=30 * 576)
        per_sample[refresh] = guess.student_s / (guess.items * 4)  # 2 views, 2 epochs
    assert per_sample[None] == pytest.approx(3265 / 2052, rel=0.15)
    assert per_sample[8] == pytest.approx(3.3, rel=0.15)


def test_a_small_models_time_does_not_follow_a_fast_probe():
    """The RULER run at 32k tokens (embedded model, window 8192, batches of 8) after a probe of 444 GFLOP/s took the
    teacher 778 s and the student 5,428 s for 1,014 items (the haystack's fact sentences: 381 at 32k tokens, as
    cost-curve-embedded-32k counted them): the small model ran at the speed of a probe of ~200. Its
    fixed share (0.8 of the calibrated time) gives the teacher within 15 % and the student's time an item within
    15 %; Qwen 1.5B's time follows the probe (its runs at 331 took no longer than the probe-scaled estimate), and on
    a GPU no share is fixed."""
    from liftlm.estimate import CALIBRATION_PROBE, cpu_rate

    run = json.loads((RESULTS / "eval" / "ruler-embedded-32k" / "run.json").read_text())
    assert run["window"] == 8192 and run["config"]["batch_size"] == 8
    guess = estimate(32_000, recorded(run["config"]), 134_479_872, 444.0, 8192, chat_before=24,
                     chat_after=6, attention=30 * 9 * 64, sentences=381)
    assert guess.teacher_s == pytest.approx(778, rel=0.15)
    assert guess.student_s / guess.items == pytest.approx(5428 / 1014, rel=0.15)
    assert cpu_rate(CALIBRATION_PROBE, 0.8) == pytest.approx(CALIBRATION_PROBE)
    assert cpu_rate(2 * CALIBRATION_PROBE, 0.8) == pytest.approx(CALIBRATION_PROBE / 0.9)
    assert cpu_rate(444.0, 0.0) == pytest.approx(444.0)
    qwen = [estimate(2000, LiftConfig(), 1_543_569_408, g, 512).total_s for g in (190.0, 380.0)]
    assert qwen[1] == pytest.approx(qwen[0] / 2)
    small = [estimate(2000, LiftConfig(), 134_479_872, g, 512).total_s for g in (190.0, 380.0)]
    assert small[1] == pytest.approx(small[0] * 0.9)
    gpu = [estimate(2000, LiftConfig(), 134_479_872, g, 512, device="cuda").total_s for g in (10**5, 2 * 10**5)]
    assert gpu[1] == pytest.approx(gpu[0] / 2)


def test_on_a_gpu_each_phase_takes_at_least_its_calls():
    """On a GPU a call costs about the same at any width: the estimate counts the teacher's calls in its shape and the
    student's steps, at the latency per layer measured on one H100 (cost-h100), and reproduces that run's rows."""
    from liftlm.distill.teacher import TeacherShape

    wide = TeacherShape(256, 4, 16)  # the teacher's shape on a GPU with room for 256 rows
    for run, layers, attention in (("cost-h100/embedded", 30, 30 * 9 * 64),
                                   ("cost-h100/qwen-shapes-student", 28, 28 * 12 * 128)):
        report = json.loads((RESULTS / run / "cost.json").read_text())
        for row in report["recipes"]:
            cfg = recorded(row["settings"])
            guess = estimate(report["document_tokens"], cfg, report["matmul_weights"], 700_000.0, 512,
                             attention=attention, device="cuda", layers=layers)
            assert guess.student_steps == pytest.approx(row["student"]["steps"], rel=0.1), (run, row["recipe"])
            assert guess.student_s == pytest.approx(row["student"]["seconds"], rel=0.35), (run, row["recipe"])
            if row["teacher"]["seconds"] > 0:  # (the Qwen shapes' items were given: no teacher ran)
                assert guess.teacher_s == pytest.approx(row["teacher"]["seconds"], rel=0.35), (run, row["recipe"])
    # the calls of either shape, as counted on the embedded model's teacher (teacher-shape-embedded)
    report = json.loads((RESULTS / "teacher-shape-embedded" / "cost.json").read_text())
    for row, shape in zip(report["recipes"], (TeacherShape(), wide)):
        guess = estimate(2000, LiftConfig(), report["matmul_weights"], 700_000.0, 512, device="cuda", layers=30,
                         shape=shape)
        assert guess.teacher_calls == pytest.approx(row["teacher"]["calls"], rel=0.1), row["recipe"]
    # on a CPU the FLOPs take longer than any call's latency: no floor
    cpu = estimate(8000, LiftConfig(), 10**9, 200.0, window=512)
    assert estimate(8000, LiftConfig(), 10**9, 200.0, window=512, device="cpu", layers=30) == cpu
    gpu = estimate(8000, LiftConfig(), 10**9, 700_000.0, window=512, device="cuda", layers=30)
    assert gpu.teacher_s == gpu.teacher_calls * 30 * 0.0036 and gpu.student_s == gpu.student_steps * 30 * 0.0115


def test_counted_fact_sentences_replace_the_assumed_rate():
    cfg = LiftConfig()
    assumed = estimate(8000, cfg, 10**9, 200.0, window=512)
    assert assumed.sentences == round(8000 * 0.0173)
    few, many = (estimate(8000, cfg, 10**9, 200.0, window=512, sentences=n) for n in (80, 240))
    assert (few.sentences, many.sentences) == (80, 240)
    assert few.asks < assumed.asks < many.asks and few.teacher_s < assumed.teacher_s < many.teacher_s
    assert many.student_s > few.student_s  # more written questions: more items to train on
    no_questions = LiftConfig(distill_questions=0)
    assert estimate(8000, no_questions, 10**9, 200.0, window=512, sentences=240).asks == \
        estimate(8000, no_questions, 10**9, 200.0, window=512, sentences=80).asks  # nothing is written about them


def test_internalize_counts_the_documents_fact_sentences_for_its_estimate(tiny_model_dir, tmp_path, monkeypatch):
    from liftlm import Lift
    from liftlm import estimate as estimate_module
    from liftlm.distill.teacher import document_fact_sentences
    from liftlm.segment import segment_spans

    cfg = LiftConfig(window=128, segment_length=48, stride=48, context_tokens=32, epochs=1, distill_prompts=1,
                     distill_answer_tokens=3, distill_questions=1, distill_retention=0.1)
    lift = Lift(str(tiny_model_dir), cfg, store=tmp_path / "store", progress=True)
    seen = []
    real = estimate_module.estimate
    monkeypatch.setattr(estimate_module, "estimate", lambda *a, **k: seen.append(a) or real(*a, **k))
    lift.internalize(TEXT * 2)
    ids = lift.tokenizer.encode(TEXT * 2, add_special_tokens=False)
    expected = document_fact_sentences(lift.tokenizer, ids, segment_spans(len(ids), 48, 48))
    assert len(seen) == 1 and seen[0][-1] == expected > 0
