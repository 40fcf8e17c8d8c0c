"""Memory, measured: the process's resident memory and its peak, and a phase's peak (the teacher's, the student's)
that a user sizes the next run's machine by, recorded beside the time in the adapter's metadata and in the cost
benchmark's rows; the benchmarks' ``PeakMemory`` (``liftlm bench scaling``) is built on the same readings.

A leaf (no liftlm imports, torch on first use). On a CPU a peak is the process's peak resident memory (Linux's
``VmHWM``, the model's weights included), reset at the start of a phase by writing 5 to ``/proc/self/clear_refs``;
where that cannot be reset (not Linux) it is the peak since the process started, and says so. On a CUDA device a
phase's peak is the most memory torch's allocator held (``max_memory_reserved``: what an out-of-memory error is
about), reset with ``reset_peak_memory_stats``. Other devices: not measured (None).
"""
from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3
_STATUS = Path("/proc/self/status")


# ---------------------------------------------------------------- the process's resident memory
def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB; None where there is no such file (not Linux)."""
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def rss_mb() -> float | None:
    """The process's resident memory now (Linux), in MiB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB: VmHWM on Linux (the high-water mark of this process's own
    memory; ``ru_maxrss`` can inherit the parent's across fork+exec), ``ru_maxrss`` elsewhere."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux ≥ 4.0); False where the OS does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is running out of memory: Python's ``MemoryError``, torch's ``OutOfMemoryError`` (CUDA), or
    an allocator's message ("can't allocate memory" on a CPU). (On Linux a process that overcommits is killed by
    the kernel instead, with no exception: only a smaller batch avoids that.)"""
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


# ---------------------------------------------------------------- a phase's peak (the teacher's, the student's)
@dataclass(frozen=True)
class Peak:
    """A measured peak: ``bytes``; ``since`` says from when: ``"phase"`` (reset at the phase's start) or
    ``"process"`` (the process's whole life: the reset is not available here)."""

    bytes: int
    since: str

    @property
    def gib(self) -> float:
        return round(self.bytes / GIB, 2)

    def to_dict(self) -> dict:
        return {"peak_memory_gib": self.gib} | ({} if self.since == "phase" else {"peak_memory_since": self.since})


def _kind(device) -> str:
    return getattr(device, "type", str(device)).split(":")[0]


def reset_peak(device="cpu") -> str:
    """Start measuring a phase's peak on ``device``; returns what the peak will be since: ``"phase"`` or
    ``"process"`` (the CPU's peak cannot be reset here)."""
    kind = _kind(device)
    if kind == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return "phase"
    if kind != "cpu":
        return "phase"
    return "phase" if reset_peak_rss() else "process"


def peak(device="cpu", since: str = "phase") -> Peak | None:
    """The peak memory on ``device`` since ``reset_peak`` (``since``: what it returned); None where it is not
    measured (devices other than a CPU or a CUDA GPU)."""
    kind = _kind(device)
    if kind == "cuda":
        import torch

        return Peak(int(torch.cuda.max_memory_reserved(device)), "phase")
    if kind != "cpu":
        return None
    return Peak(round(peak_rss_mb() * 2**20), since)


def training_peak(result) -> dict:
    """A ``liftlm.loop.TrainResult``'s measured peak memory as metadata records it ({} where not measured)."""
    if getattr(result, "peak_memory_gib", None) is None:
        return {}
    return Peak(round(result.peak_memory_gib * GIB), result.peak_memory_since).to_dict()


# ---------------------------------------------------------------- the benchmarks' measure of a block of work
class PeakMemory:
    """Measure a block of work: RSS before it, the peak RSS during it (where the OS allows resetting the mark)
    and over the whole process, and on CUDA the allocator's peak during it.

        with PeakMemory(device) as mem:
            work()
        mem.result()  # {"peak_rss_mb", "work_peak_rss_mb", "base_rss_mb", "peak_gpu_mb"}
    """

    def __init__(self, device=None):
        self.device = device
        self.cuda = getattr(device, "type", str(device)).startswith("cuda")

    def __enter__(self):
        import torch

        self.before_peak = peak_rss_mb()  # loading the model, importing libraries
        self.base = rss_mb()
        self.resettable = reset_peak_rss()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.gpu_peak = torch.cuda.max_memory_allocated() / 2**20
        self.after_peak = peak_rss_mb()
        return False

    def result(self) -> dict:
        work = self.after_peak if self.resettable else None
        return {
            "peak_rss_mb": round(max(self.before_peak, self.after_peak), 1),
            "work_peak_rss_mb": None if work is None else round(work, 1),
            "base_rss_mb": None if self.base is None else round(self.base, 1),
            "peak_gpu_mb": round(self.gpu_peak, 1) if self.cuda else None,
        }
