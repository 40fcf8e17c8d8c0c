"""Batch internalization (`internalize --documents`), locally and on Ray, and adapters that vLLM can serve."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from liftlm import Lift, LiftConfig, LiftError
from liftlm.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_metadata
from liftlm.batch import BatchJob, Results, read_documents, run_local, run_ray
from liftlm.cli import main
from liftlm.vllm import publish, vllm_problems

SMALL = dict(objective="ct", segment_length=32, context_tokens=32, window=256, epochs=1, lora_rank=4)
SMALL_FLAGS = ["--objective", "ct", "--segment-length", "32", "--context-tokens", "32", "--window", "256", "--epochs", "1",
               "--lora-rank", "4", "--quiet"]
TEXTS = {
    "keeper": "The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. " * 4,
    "storm": "In the winter of the great storm forty-one vessels sought shelter in the bay of Varnholm. " * 4,
    "telescope": "The brass telescope in the town museum was made in Glasgow in 1881 and still works. " * 4,
}


def adapters_in(store: Path) -> list[str]:
    """Everything in the store folder: adapters (hex keys) and any leftover (a temporary folder). The work area
    ``.work`` (one lock file per key; checkpoints while training) is left out, once it holds only lock files."""
    if not store.exists():
        return []
    work = store / ".work"
    if work.is_dir():
        assert all(p.name.endswith(".lock") for p in work.iterdir()), list(work.iterdir())  # no checkpoint left
    return sorted(p.name for p in store.iterdir() if p != work)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("liftlm: error: ")
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for name, text in TEXTS.items():
        (d / f"{name}.txt").write_text(text)
    (d / "broken.txt").write_bytes(b"\x00\x01binary")
    (d / ".hidden").write_text("not a document")
    return d


def job_for(model_dir, tmp_path, **kw) -> BatchJob:
    return BatchJob(model=str(model_dir), config=LiftConfig(**SMALL).to_dict(), store=str(tmp_path / "store"),
                    names=str(tmp_path / "names"), device="cpu", **kw)


def read_rows(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len({r["document"] for r in rows})  # one row per document
    return {r["document"]: r for r in rows}


# --- reading the document list ---
def test_read_documents_folder_and_jsonl(folder, tmp_path):
    docs = read_documents(folder)
    assert [d.id for d in docs] == ["broken", "keeper", "storm", "telescope"]  # sorted, hidden file skipped
    assert docs[0].text is None and "binary" in docs[0].error
    assert docs[1].text == TEXTS["keeper"] and docs[1].error is None
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n"
                     + json.dumps({"id": 7, "text": "  "}) + "\n")
    docs = read_documents(jsonl)
    assert [(d.id, d.text) for d in docs] == [("a", "one"), ("line3", "two"), ("7", None)]
    assert "empty" in docs[2].error
    for content, message in [("{not json}\n", "line 1 is not JSON"), ('{"id": "a"}\n', 'no string "text"'),
                             ('{"id": "a/b", "text": "x"}\n', "not a usable name"),
                             ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "repeated document ids"),
                             ("\n", "holds no documents")]:
        jsonl.write_text(content)
        with pytest.raises(LiftError, match=message):
            read_documents(jsonl)
    with pytest.raises(LiftError, match="no such file or folder"):
        read_documents(tmp_path / "missing")


# --- the local loop, through the CLI ---
def test_documents_cli_trains_each_once_reports_failures_and_skips_stored(capsys, folder, tmp_path,
                                                                           tiny_model_dir):
    store, results = tmp_path / "store", tmp_path / "out" / "results.jsonl"
    argv = ["internalize", "--documents", folder, "--model", tiny_model_dir, "--store", store,
            "--results", results, *SMALL_FLAGS]
    code, out, err = run(capsys, *argv)
    assert code == 1, err  # one document failed; the others finished
    rows = read_rows(results)
    assert {d: r["status"] for d, r in rows.items()} == {"broken": "failed", "keeper": "trained", "storm": "trained",
                                                        "telescope": "trained"}
    assert "binary" in rows["broken"]["error"] and rows["broken"]["adapter"] is None
    assert "liftlm: broken: failed" in err and "3 trained, 0 already stored, 1 failed" in err
    keys = adapters_in(store)
    assert len(keys) == 3 and not any(k.startswith(".") for k in keys)  # one adapter each, no leftovers
    for doc, r in rows.items():
        if doc == "broken":
            continue
        assert set(r) >= {"document", "adapter", "status", "seconds", "error"}
        assert r["error"] is None and r["seconds"] > 0 and Path(r["adapter"]).parent == store
        assert read_metadata(r["adapter"])["document_sha256"]
        assert (store / r["key"]).samefile(r["adapter"])
        # the name link (default: names/ beside the store) resolves to the document's adapter
        assert (tmp_path / "names" / doc).samefile(r["adapter"]) and Path(r["name"]) == tmp_path / "names" / doc
        assert (Path(r["adapter"]) / "document.txt").read_text() == TEXTS[doc]
        assert f"{doc}\t{r['adapter']}" in out
    # a second run finds everything in the store: no training, same adapters
    before = {k: (store / k / ADAPTER_WEIGHTS).stat().st_mtime_ns for k in keys}
    code, out, err = run(capsys, *argv)
    again = read_rows(results)
    assert code == 1 and {r["status"] for d, r in again.items() if d != "broken"} == {"stored"}
    assert all("train_seconds" not in r for r in again.values())
    assert {k: (store / k / ADAPTER_WEIGHTS).stat().st_mtime_ns for k in adapters_in(store)} == before
    assert "0 trained, 3 already stored" in err


def test_same_text_under_two_ids_trains_once(tmp_path, tiny_model_dir):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": TEXTS["storm"]}) + "\n" for i in ("first", "second")))
    job = job_for(tiny_model_dir, tmp_path)
    rows = run_local(job, read_documents(jsonl), Results(None), progress=False)
    assert [r["status"] for r in rows] == ["trained", "trained"] and rows[0]["adapter"] == rows[1]["adapter"]
    assert len(adapters_in(tmp_path / "store")) == 1
    assert (tmp_path / "names" / "first").samefile(tmp_path / "names" / "second")


def test_documents_cli_bad_input_is_one_line_and_writes_nothing(capsys, monkeypatch, folder, tmp_path,
                                                                tiny_model_dir):
    results = tmp_path / "results.jsonl"
    base = ["--model", tiny_model_dir, "--store", tmp_path / "store", "--results", results, *SMALL_FLAGS]
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"id": "x", "text": "fine"}\n{"id": "x", "text": "again"}\n')
    cases = [
        (["--documents", tmp_path / "missing"], "no such file or folder"),
        (["--documents", bad_jsonl], "repeated document ids"),
        (["--documents", folder, "--ray-cpus", "2"], "--ray-cpus goes with --ray"),
        (["--document", folder / "keeper.txt", "--ray"], "go with --documents"),
        (["--documents", folder, "--served-model-name", " "], "--served-model-name is empty"),
    ]
    if importlib.util.find_spec("ray") is not None:
        cases += [(["--documents", folder, "--ray", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
                  (["--documents", folder, "--ray", "nonsense"], "is not an address")]
    for extra, message in cases:
        code, out, err = run(capsys, "internalize", *extra, *base)
        assert code == 2 and message in one_error_line(err), (extra, err)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, out, err = run(capsys, "internalize", "--documents", folder, "--ray", *base)
    assert code == 2 and "pip install 'liftlm[ray]'" in one_error_line(err)
    assert not results.exists() and not (tmp_path / "store").exists() and not (tmp_path / "names").exists()


# --- the store under duplicated writers ---
def test_a_duplicated_save_that_loses_the_rename_race_leaves_one_adapter(tmp_path, tiny_model_dir):
    store = tmp_path / "store"
    lift = Lift(str(tiny_model_dir), LiftConfig(**SMALL), store=store, device="cpu", progress=False)
    first = lift.internalize(TEXTS["keeper"]).adapter
    weights = (first / ADAPTER_WEIGHTS).read_bytes()
    # a second writer of the same key (a duplicated or retried task) finishes after the first one
    second = lift.internalize(TEXTS["keeper"], force=True)
    assert second.trained and second.adapter == first and adapters_in(store) == [first.name]
    assert (first / ADAPTER_WEIGHTS).read_bytes() == weights  # the one in place was not touched
    read_metadata(first)


# --- vLLM-ready adapters ---
@pytest.mark.parametrize("targets", ["q_proj,k_proj,v_proj,o_proj", "all-linear"])
def test_stored_adapter_has_the_fields_vllm_needs(tmp_path, tiny_model_dir, targets):
    lift = Lift(str(tiny_model_dir), LiftConfig(**SMALL, target_modules=targets), store=tmp_path / "store",
                device="cpu", progress=False)
    adapter = lift.internalize(TEXTS["telescope"]).adapter
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA"
    assert isinstance(config["target_modules"], list) and "all-linear" not in config["target_modules"]
    if targets == "all-linear":  # resolved into the model's linear layers (not the output head)
        assert {t.rsplit(".", 1)[-1] for t in config["target_modules"]} == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not config.get("modules_to_save")
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())  # what `vllm serve DIR` names it
    from safetensors import safe_open

    with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as st:
        keys = list(st.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)  # no embeddings, no saved modules
    assert vllm_problems(adapter, str(tiny_model_dir.resolve())) == []
    # served under another name: a names entry carries it; the stored adapter is left as it was
    stored_config = (adapter / ADAPTER_CONFIG).read_bytes()
    link = publish(tmp_path / "names", "telescope", adapter, "acme/served-model")
    assert json.loads((link / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "acme/served-model"
    assert (link / ADAPTER_WEIGHTS).samefile(adapter / ADAPTER_WEIGHTS)
    assert vllm_problems(link, "acme/served-model") == [] and (adapter / ADAPTER_CONFIG).read_bytes() == stored_config
    assert adapter.stat().st_mode & 0o777 == link.resolve().stat().st_mode & 0o777 == 0o755  # others can read
    assert publish(tmp_path / "names", "telescope", adapter, "acme/served-model") == link  # idempotent
    # re-pointed atomically at another adapter, under the trained-from name
    other = lift.internalize(TEXTS["storm"]).adapter
    assert publish(tmp_path / "names", "telescope", other).samefile(other)


def test_vllm_problems_finds_what_vllm_would_reject(tmp_path, tiny_model_dir):
    lift = Lift(str(tiny_model_dir), LiftConfig(**SMALL), store=tmp_path / "store", device="cpu", progress=False)
    adapter = lift.internalize(TEXTS["keeper"]).adapter
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({**config, "target_modules": "all-linear",
                                                      "modules_to_save": ["lm_head"]}))
    problems = vllm_problems(adapter, "other/model")
    assert len(problems) == 3, problems
    assert any("target_modules" in p for p in problems) and any("modules_to_save" in p for p in problems)
    assert any("other/model" in p for p in problems)
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({**config, "target_modules": ["q_proj"]}))
    assert any("does not name" in p for p in vllm_problems(adapter))


# --- Ray: a local instance (2 CPUs), then a simulated two-node cluster ---
try:
    import ray
except ImportError:  # the dev extra installs it; without it only these tests are skipped
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'liftlm[ray]')")


def kill_first_step(marker: str):
    """An on_step hook that kills its worker process at the first optimizer step of the first task to get
    there (the marker file records that it happened; later attempts and tasks run normally)."""
    def on_step(progress):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)

    return on_step


@pytest.fixture(scope="class")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield ray
    ray.shutdown()


def jsonl_of(path: Path, docs: dict) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs.items()))
    return path


@needs_ray
class TestRay:
    def test_killed_task_is_retried_failures_reported_each_adapter_stored_once(self, local_ray, tmp_path,
                                                                                tiny_model_dir):
        docs = read_documents(jsonl_of(tmp_path / "docs.jsonl", {**TEXTS, "empty": "   "}))
        marker = tmp_path / "killed"
        job = job_for(tiny_model_dir, tmp_path, on_step=kill_first_step(str(marker)))
        results = Results(tmp_path / "results.jsonl")
        run_ray(job, docs, results, num_cpus=1, max_retries=2, progress=False)
        results.close()
        assert marker.exists()  # a worker really died mid-training
        rows = read_rows(tmp_path / "results.jsonl")
        assert {d: r["status"] for d, r in rows.items()} == {**{d: "trained" for d in TEXTS}, "empty": "failed"}
        assert "empty" in rows["empty"]["error"]
        store = tmp_path / "store"
        assert sorted(adapters_in(store)) == sorted(r["key"] for d, r in rows.items() if d != "empty")
        for doc in TEXTS:
            adapter = Path(rows[doc]["adapter"])
            assert read_metadata(adapter)["training"]["steps"] > 0 and vllm_problems(adapter) == []
            assert (adapter / "document.txt").read_text() == TEXTS[doc]
            assert (tmp_path / "names" / doc).samefile(adapter)
        # run again (idempotent): everything is found in the store, nothing is trained or written
        rows2 = run_ray(job_for(tiny_model_dir, tmp_path), docs, Results(None), progress=False)
        assert sorted(r["status"] for r in rows2) == ["failed", "stored", "stored", "stored"]
        assert sorted(adapters_in(store)) == sorted(r["key"] for d, r in rows.items() if d != "empty")

    def test_without_retries_a_killed_task_is_a_failed_row(self, local_ray, tmp_path, tiny_model_dir):
        docs = read_documents(jsonl_of(tmp_path / "docs.jsonl", {"storm": TEXTS["storm"]}))
        job = job_for(tiny_model_dir, tmp_path, on_step=kill_first_step(str(tmp_path / "killed")))
        [row] = run_ray(job, docs, Results(None), num_cpus=1, max_retries=0, progress=False)
        assert row["status"] == "failed" and "Ray task failed" in row["error"]
        assert adapters_in(tmp_path / "store") == []  # the dead worker left no half adapter

    def test_duplicated_tasks_leave_one_adapter(self, local_ray, tmp_path, tiny_model_dir):
        from liftlm.batch import _ray_task

        job = job_for(tiny_model_dir, tmp_path, force=True)  # both really train and save
        task = ray.remote(_ray_task).options(num_cpus=1)
        rows = ray.get([task.remote(job, "keeper", TEXTS["keeper"]) for _ in range(2)])
        assert [r["status"] for r in rows] == ["trained", "trained"] and rows[0]["adapter"] == rows[1]["adapter"]
        assert adapters_in(tmp_path / "store") == [Path(rows[0]["adapter"]).name]
        read_metadata(rows[0]["adapter"])


@needs_ray
def test_two_node_cluster_spreads_tasks_over_both_nodes(tmp_path, tiny_model_dir):
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        docs = read_documents(jsonl_of(tmp_path / "docs.jsonl", TEXTS))
        rows = run_ray(job_for(tiny_model_dir, tmp_path), docs, Results(None), num_cpus=1, progress=False)
        assert [r["status"] for r in rows] == ["trained"] * 3
        assert len({r["node"].split("/")[1] for r in rows}) == 2  # both nodes ran tasks
        assert len(adapters_in(tmp_path / "store")) == 3
        assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
