"""Key/value caches: run a prefix once without gradients, then continue from its keys/values.

Three tricks of liftlm attend to keys/values computed earlier instead of running the tokens again:

* overlap training (``liftlm.overlap``) runs the CT prompt and the previous ℓ - s tokens without gradients and
  trains the s new tokens after them; recurrent training keeps those keys/values from step to step;
* the distillation teacher (``liftlm.distill.teacher``) runs each chunk once and answers every prompt about it
  from the chunk's keys/values, several chunks at once (``left_padded``);
* the distillation student (``liftlm.distill.student``) reuses the keys/values of the head+tail view that all the
  items of a document share.

Keys/values are passed around as ``KV``: one ``(keys, values)`` pair per layer, each ``[B, heads, L, head_dim]``
(``B`` rows, ``L`` cached positions). ``as_cache`` wraps such a list as a transformers cache a forward pass
extends in place; ``kv_tensors`` takes the list back out of one.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), each [B, heads, L, head_dim]


def cache_kwarg(model) -> str:
    """The name under which the model takes a KV cache: transformers 5.x renamed ``past_key_values`` to ``cache``
    (5.24 still accepts the old name with a deprecation warning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a forward pass with ``use_cache=True`` returned (under either name), or None."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def prefix_cache(model, ids: torch.Tensor):
    """Keys/values of ``ids`` ([1, P], positions 0..P-1) as a fresh Cache, computed without gradients: constants
    of the step, no graph kept. ``logits_to_keep=1`` skips the vocabulary projection of the prefix."""
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # [1, P]
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    if cache is None:
        raise RuntimeError("the model returned no KV cache for the prefix (use_cache=True); overlap training and "
                           "distillation continue from one")
    return cache


def kv_tensors(cache) -> KV:
    """The cache's keys and values, one ``(keys, values)`` pair per layer (the tensors themselves, not copies)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def as_cache(kv: KV):
    """A transformers ``DynamicCache`` that starts from ``kv`` (a forward pass with it appends its own tokens)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(kv))


def left_padded(kvs: list[KV]) -> tuple[KV, list[int]]:
    """One batch from single-row caches of unequal lengths: each row's keys/values left-padded with zeros to the
    longest (``[len(kvs), heads, max L, head_dim]`` per layer), and each row's length, so that the caller masks
    the pads out and counts positions without them."""
    lens = [kv[0][0].shape[2] for kv in kvs]
    longest = max(lens)
    return [tuple(torch.cat([F.pad(kv[layer][j], (0, 0, longest - n, 0)) for kv, n in zip(kvs, lens)])
                  for j in (0, 1))
            for layer in range(len(kvs[0]))], lens
