"""The peak memory of a phase of work (the teacher, the student), measured: what a user sizes the next run's
machine by, recorded beside the time in the adapter's metadata and in the cost benchmark's rows.

A leaf (no liftlm imports, torch on first use). On a CPU the figure is the process's peak resident memory (Linux's
``VmHWM``, the model's weights included), reset at the start of a phase by writing 5 to ``/proc/self/clear_refs``;
where that cannot be reset (not Linux) it is the peak since the process started, and says so. On a CUDA device it
is the most memory torch's allocator held (``max_memory_reserved``: what an out-of-memory error is about), reset
with ``reset_peak_memory_stats``. Other devices: not measured (None).
"""
from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

GIB = 1024 ** 3


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


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmHWM``, ``VmRSS``); None where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current resident memory (Linux 4.0 on)
        return "phase"
    except OSError:
        return "process"


def peak(device="cpu", since: str = "phase") -> Peak | None:
    """The peak memory on ``device`` since ``reset_peak`` (``since``: what it returned); None where it is not
    measured (devices other than a CPU or a CUDA GPU)."""
    kind = _kind(device)
    if kind == "cuda":
        import torch

        return Peak(int(torch.cuda.max_memory_reserved(device)), "phase")
    if kind != "cpu":
        return None
    kib = _status_kib("VmHWM") if since == "phase" else None
    if kib is not None:
        return Peak(kib * 1024, "phase")
    most = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return Peak(most if sys.platform == "darwin" else most * 1024, "process")


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak`` (a ``Peak``, or None where not measured)."""

    def __init__(self, device="cpu"):
        self.device = device
        self.peak: Peak | None = None
        self._since = "phase"

    def __enter__(self) -> PeakMemory:
        self._since = reset_peak(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.peak = peak(self.device, self._since)

    def to_dict(self) -> dict:
        return self.peak.to_dict() if self.peak is not None else {}


def training_peak(result) -> dict:
    """A ``liftlm.loop.TrainResult``'s measured peak memory as metadata records it ({} where not measured)."""
    if getattr(result, "peak_memory_gib", None) is None:
        return {}
    return Peak(round(result.peak_memory_gib * GIB), result.peak_memory_since).to_dict()
