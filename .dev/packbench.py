"""Time the student's batch of 8, left-padded vs packed, on a real model (fwd+bwd)."""
import random, sys, time, torch
from liftlm.models import load_model
from liftlm.config import LiftConfig
from liftlm.train import attach_adapter
from liftlm.distill.student import SoftLoss, SoftSample, packed_rows
spec = (sys.argv[1] or None) if len(sys.argv) > 1 else None
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
torch.set_num_threads(2)
loaded = load_model(spec)
cfg = LiftConfig(objective="distill")
model = attach_adapter(loaded.model, cfg)
model.train()
rng = random.Random(0)
V = model.get_base_model().config.vocab_size
def sample(prefix):
    n = rng.randint(55, 95); m = rng.randint(12, 40)
    ids = [rng.randrange(100, V - 1) for _ in range(n)]
    return SoftSample(ids, [[rng.randrange(V) for _ in range(8)] for _ in range(m)], [[-1.0 * k for k in range(8)] for _ in range(m)], prefix, "x")
for p in (25, 480):
    prefix = [rng.randrange(100, V - 1) for _ in range(p)]
    samples = [sample(prefix) for _ in range(8 * reps)]
    batches = [list(range(i, i + 8)) for i in range(0, len(samples), 8)]
    for mode in ("padded", "packed", "padded", "packed"):
        loss = SoftLoss(model, samples, refresh=1000)
        if mode == "padded":
            loss.head = None
        loss([0]) ; model.zero_grad()  # warm, prefix computed
        t = time.perf_counter()
        for b in batches:
            l, _ = loss(b); l.backward()
        dt = time.perf_counter() - t
        model.zero_grad()
        rows = packed_rows([len(samples[i].input_ids) for i in batches[0]], p, SoftLoss(model, samples[:1]).key_cost)
        print(f"prefix {p} {mode}: {dt / len(batches):.3f} s/batch pads {loss.pad_tokens} rows(first) {[len(r) for r in rows]}", flush=True)
