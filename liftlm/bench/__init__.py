"""Benchmarks of liftlm's cost (the issue's "scaling" and "throughput" checks).

* ``scaling``    — wall time and peak memory of LIFT (one epoch) and of ICL (prefill + a short answer) against
  the document's length, each point in a fresh process; linear/quadratic fits, crossover, plot, tables
  (``liftlm.bench.scaling``).
* ``throughput`` — tokens/s of liftlm's trainer against a bare forward+backward loop over the same samples,
  and the fraction of the machine's matmul ceiling it reaches (``liftlm.bench.throughput``).

Run them as ``liftlm bench scaling ...`` / ``liftlm bench throughput ...`` (or ``python -m liftlm.bench ...``).
"""
