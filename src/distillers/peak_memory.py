"""Peak memory of a benchmarked pipeline: CUDA's max allocated, or on CPU the process's peak resident set."""

from __future__ import annotations

import resource

import torch


class PeakMemory:
    """Peak memory of one pipeline: CUDA max allocated, or on CPU the main process's peak RSS.

    On Linux the RSS peak is reset through ``/proc/self/clear_refs``; where that fails, the process-lifetime peak
    is reported and ``kind`` says so. DataLoader workers are separate processes and not counted.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda max allocated" if device.type == "cuda" else "peak RSS (main process)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM (Linux >= 4.0)
        except OSError:
            self.kind = "peak RSS since process start"

    def read_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
