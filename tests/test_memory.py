"""liftlm.memory: a phase's peak memory, measured (the process's resident peak on a CPU)."""
import subprocess
import sys

import pytest
import torch

from liftlm.memory import GIB, Peak, peak, reset_peak, rss_mb

MIB = 1024 ** 2


def _touch(mib: int) -> torch.Tensor:
    """A tensor of ``mib`` MiB whose pages are all written (resident)."""
    return torch.ones(mib * MIB // 4, dtype=torch.float32)


def test_a_phase_peak_holds_what_was_resident_during_it():
    since = reset_peak("cpu")
    before = peak("cpu", since).bytes
    big = _touch(192)
    resident = rss_mb() if sys.platform.startswith("linux") else big.numel() * 4 / MIB
    del big
    most = peak("cpu", since)
    assert most is not None and most.since == since and most.bytes >= before > 0
    # The peak holds the most that was resident at once with the 192 MiB alive. (Not ``before + 192 MiB``: on a
    # machine short of memory the kernel drops this process's file-backed pages, the model weights mapped by
    # earlier tests, while these are written, and the resident total need not grow by what was allocated.)
    assert most.bytes >= resident * MIB - 8 * MIB  # (the kernel's per-CPU counters may lag by a few MiB)


_RESET_IN_A_FRESH_PROCESS = """
import torch
from liftlm.memory import peak, reset_peak
big = torch.ones(256 * 2**20 // 4)  # 256 MiB, all pages written
del big  # (an allocation this large is mapped on its own, and given back to the system when freed)
high = peak("cpu").bytes
print(reset_peak("cpu"), high, peak("cpu").bytes)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident peak is reset through /proc (Linux)")
def test_the_peak_is_reset_at_the_start_of_a_phase():
    # In a fresh process: in this one, earlier tests leave freed memory that the allocator keeps and reuses, so
    # the 256 MiB need not raise the resident peak nor leave it when freed.
    out = subprocess.run([sys.executable, "-c", _RESET_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    since, high, low = out[0], int(out[1]), int(out[2])
    assert since == "phase"
    assert low < high - 128 * MIB  # the earlier 256 MiB are not this phase's


def test_a_peak_says_when_it_is_the_whole_process():
    assert Peak(3 * GIB, "phase").to_dict() == {"peak_memory_gib": 3.0}
    assert Peak(GIB // 2, "process").to_dict() == {"peak_memory_gib": 0.5, "peak_memory_since": "process"}
    assert peak("cpu", since="process").since == "process"  # the lifetime peak, where no reset was made
    assert peak("meta") is None  # not measured there
