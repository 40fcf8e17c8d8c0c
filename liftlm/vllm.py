"""Adapters that vLLM serves: what vLLM's LoRA loader needs from an adapter, and names it resolves.

vLLM (``vllm serve MODEL --enable-lora``) with its filesystem LoRA resolver (``VLLM_PLUGINS=
lora_filesystem_resolver``, ``VLLM_LORA_RESOLVER_CACHE_DIR=DIR``) answers a request for ``model=NAME`` by
loading ``DIR/NAME/`` if its ``adapter_config.json`` is a LoRA whose ``base_model_name_or_path`` equals the
served model's name. The store is keyed by hashes, so ``publish`` keeps a folder of names:

    <names>/<document id>   -> the stored adapter (a symbolic link, replaced atomically)

With a served model name other than the one the adapter was trained from (``--served-model-name``), the link
points to ``<names>/.served/<key>-<hash of the name>/`` instead: the adapter's config with that
``base_model_name_or_path`` beside a link to the stored weights (nothing is copied, the stored adapter is
not changed; one store can back several deployments).

``vllm_problems`` lists what would stop vLLM from loading an adapter directory (empty list: ready).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .fileio import atomic_directory

SERVED = ".served"


def _replace_symlink(link: Path, target: str) -> None:
    """Make ``link`` point at ``target`` atomically (a new link renamed over the old one)."""
    tmp = Path(tempfile.mktemp(prefix=f".tmp-{link.name}-", dir=link.parent))
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(names: str | Path, name: str, adapter: str | Path, served_model_name: str | None = None) -> Path:
    """Point ``<names>/<name>`` at ``adapter`` (relative links, so the folder can be mounted anywhere)."""
    names, adapter = Path(names), Path(adapter)
    names.mkdir(parents=True, exist_ok=True)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    target = adapter
    if served_model_name is not None and config.get("base_model_name_or_path") != served_model_name:
        tag = hashlib.sha256(served_model_name.encode()).hexdigest()[:12]
        target = names / SERVED / f"{adapter.name}-{tag}"
        if not target.is_dir():  # same key and name = same content: a concurrent writer's entry is kept
            with atomic_directory(target) as tmp:
                tmp.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
                (tmp / ADAPTER_CONFIG).write_text(
                    json.dumps({**config, "base_model_name_or_path": served_model_name}, indent=2) + "\n",
                    encoding="utf-8")
                os.symlink(os.path.relpath(adapter / ADAPTER_WEIGHTS, target), tmp / ADAPTER_WEIGHTS)
    link = names / name
    _replace_symlink(link, os.path.relpath(target, names))
    return link


def vllm_problems(directory: str | Path, served_model_name: str | None = None) -> list[str]:
    """What would stop vLLM's LoRA loader from serving this adapter directory on ``served_model_name``."""
    from safetensors import safe_open

    d = Path(directory)
    try:
        config = json.loads((d / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [f"{ADAPTER_CONFIG} unreadable ({e})"]
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets:
        problems.append(f"target_modules is {targets!r}, not an explicit list of module names")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save is set ({config['modules_to_save']}); vLLM loads LoRA weights only")
    if served_model_name is not None and config.get("base_model_name_or_path") != served_model_name:
        problems.append(f"base_model_name_or_path is {config.get('base_model_name_or_path')!r}, not the served "
                        f"model {served_model_name!r} (the filesystem resolver would skip it)")
    try:
        with safe_open(str(d / ADAPTER_WEIGHTS), framework="pt") as st:
            keys = list(st.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        return problems + [f"{ADAPTER_WEIGHTS} unreadable ({e})"]
    others = [k for k in keys if ".lora_A." not in k and ".lora_B." not in k]
    if others:
        problems.append(f"weights other than LoRA A/B matrices (resized embeddings or saved modules): "
                        f"{', '.join(others[:3])}")
    if isinstance(targets, list):
        trained = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in keys}
        unnamed = sorted(m for m in trained if not any(m == t or m.endswith("." + t) for t in targets))
        if unnamed:
            problems.append(f"LoRA weights for modules target_modules does not name: {', '.join(unnamed[:3])}")
    return problems
