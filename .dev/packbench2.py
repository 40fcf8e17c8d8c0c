import random, sys, time, torch
from liftlm.models import load_model
from liftlm.config import LiftConfig
from liftlm.train import attach_adapter
from liftlm.distill.student import SoftLoss, SoftSample, packed_rows
spec = sys.argv[1] or None
reps = int(sys.argv[2]); ps = [int(x) for x in sys.argv[3].split(",")]
torch.set_num_threads(2)
loaded = load_model(spec)
model = attach_adapter(loaded.model, LiftConfig(objective="distill")); model.train()
rng = random.Random(0)
V = model.get_base_model().config.vocab_size
def sample(prefix):
    n = rng.randint(55, 95); m = rng.randint(12, 40)
    return SoftSample([rng.randrange(100, V - 1) for _ in range(n)], [[rng.randrange(V) for _ in range(8)] for _ in range(m)], [[-1.0 * k for k in range(8)] for _ in range(m)], prefix, "x")
for p in ps:
    prefix = [rng.randrange(100, V - 1) for _ in range(p)]
    samples = [sample(prefix) for _ in range(8 * reps)]
    batches = [list(range(i, i + 8)) for i in range(0, len(samples), 8)]
    for mode in sys.argv[4].split(","):
        loss = SoftLoss(model, samples, refresh=1000)
        chosen = loss.key_cost
        if mode == "padded": loss.head = None
        if mode == "one row": loss.key_cost = 0.0
        if mode == "eight rows": loss.key_cost = 1e9
        loss([0]); model.zero_grad()
        t = time.perf_counter()
        for b in batches:
            l, _ = loss(b); l.backward()
        dt = time.perf_counter() - t; model.zero_grad()
        print(f"prefix {p} {mode}: {dt / len(batches):.3f} s/batch pads {loss.pad_tokens} key_cost {chosen:.2e}", flush=True)
