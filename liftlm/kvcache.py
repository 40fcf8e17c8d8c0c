"""Key/value caches: run a prefix once without gradients, then continue from its keys/values.

Three tricks of liftlm attend to keys/values computed earlier instead of running the tokens again:

* overlap training (``liftlm.overlap``) runs the CT prompt and the previous ℓ - s tokens without gradients and
  trains the s new tokens after them; recurrent training keeps those keys/values from step to step;
* the distillation teacher (``liftlm.distill.teacher``) runs each chunk once and answers every prompt about it
  from the chunk's keys/values, several chunks at once (``decoding_cache``: left-padded, with room to decode);
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
from transformers.cache_utils import DynamicLayer

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


class RoomyLayer(DynamicLayer):
    """A cache layer over buffers with room to spare (``[B, heads, capacity, head_dim]``, the first ``n`` positions
    held): a forward pass writes its positions into the room, and ``keys``/``values`` are views of the held part.
    A ``DynamicLayer`` concatenates its whole keys and values anew at every token instead: a fifth of the embedded
    model's teacher time went to those copies. Empty, the layer takes its buffers at its first update (``capacity``
    positions, or that update's length if more); out of room, they grow to twice their size."""

    def __init__(self, capacity: int, keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                 n: int = 0):
        super().__init__()
        self.capacity = capacity
        if keys is not None:
            self._hold(keys, values, n)

    def _hold(self, keys: torch.Tensor, values: torch.Tensor, n: int) -> None:
        self.device, self.is_initialized = keys.device, True
        self._keys, self._values, self._n = keys, values, n
        self.keys, self.values = keys[:, :, :n], values[:, :, :n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        m = key_states.shape[-2]
        if not self.is_initialized:
            b, h, _, d = key_states.shape
            size = max(self.capacity, m)
            self._hold(key_states.new_empty(b, h, size, d), value_states.new_empty(b, h, size, value_states.shape[-1]), 0)
        n = self._n
        if n + m > self._keys.shape[2]:
            more = max(n + m, 2 * self._keys.shape[2]) - self._keys.shape[2]
            self._keys, self._values = (F.pad(t, (0, 0, 0, more)) for t in (self._keys, self._values))
        self._keys[:, :, n:n + m] = key_states
        self._values[:, :, n:n + m] = value_states
        self._hold(self._keys, self._values, n + m)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Only the rows ``indices`` (their room kept)."""
        if self.is_initialized:
            self._hold(self._keys[indices], self._values[indices], self._n)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            self._hold(self._keys, self._values, max(self._n + tokens_to_remove, 0))
        else:
            super().crop(tokens_to_remove)


def roomy_cache(kv: KV, capacity: int):
    """A transformers cache that starts from ``kv`` (none: empty) and holds up to ``capacity`` positions without
    reallocating (``RoomyLayer``): for a decoding loop whose prompt and answer lengths are known ahead."""
    from transformers import DynamicCache

    if not kv:
        cache = DynamicCache()
        cache.layer_class_to_replicate = lambda: RoomyLayer(capacity)
        return cache
    layers = []
    for keys, values in kv:
        n = keys.shape[2]
        room = [t.new_empty(*t.shape[:2], max(capacity, n), t.shape[3]) for t in (keys, values)]
        room[0][:, :, :n], room[1][:, :, :n] = keys, values
        layers.append(RoomyLayer(capacity, *room, n))
    return _cache_with(layers)


def decoding_cache(kvs: list[KV], room: int):
    """A batch's cache for decoding up to ``room`` more positions: the single-row caches ``kvs`` left-padded with
    zeros to the longest (the caller masks the pads out and counts positions without them), in ``RoomyLayer``
    buffers with ``room`` positions to spare. Returns the cache and each row's length."""
    lens = [kv[0][0].shape[2] for kv in kvs]
    longest = max(lens)
    layers = []
    for layer in range(len(kvs[0])):
        buffers = []
        for j in (0, 1):
            first = kvs[0][layer][j]
            buf = first.new_empty(len(kvs), first.shape[1], longest + room, first.shape[3])  # the room: written
            for row, (kv, n) in enumerate(zip(kvs, lens)):                                 # before it is read
                buf[row, :, :longest - n] = 0
                buf[row, :, longest - n:longest] = kv[layer][j][0]
            buffers.append(buf)
        layers.append(RoomyLayer(longest + room, *buffers, longest))
    return _cache_with(layers), lens


def _cache_with(layers: list):
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = layers
    return cache
