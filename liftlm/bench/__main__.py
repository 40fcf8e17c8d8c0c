"""``python -m liftlm.bench scaling|throughput ...`` (the same as ``liftlm bench ...``)."""
import sys

from .cli import main

sys.exit(main())
