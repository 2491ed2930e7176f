"""The one peak-memory measure of the project's tools, and a sampler of
memory over time."""
import os
import resource
import threading
import time
from typing import Dict, List, Tuple

import torch


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak memory in MB: ``max_memory_allocated`` on CUDA,
    the peak resident set size (RSS) on CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryTimeline:
    """Memory sampled every ``interval`` s in a thread (RSS from
    /proc/self/statm on CPU, allocated memory on CUDA), beside the events
    ``mark`` records: ``peak()`` says where the samples peaked."""

    def __init__(self, device, interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.samples: List[Tuple[float, float]] = []
        self.events: List[Tuple[float, str]] = []
        self._running = False

    def memory_mb(self) -> float:
        if self.device.type == 'cuda':
            return torch.cuda.memory_allocated(self.device) / 2**20
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2**20

    def mark(self, event: str) -> None:
        self.events.append((time.perf_counter(), event))

    def _sample(self) -> None:
        while self._running:
            self.samples.append((time.perf_counter(), self.memory_mb()))
            time.sleep(self.interval)

    def __enter__(self) -> 'MemoryTimeline':
        self.samples.clear()
        self.events.clear()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()

    def peak(self) -> Dict:
        """``{'mb', 'at_s', 'of_s', 'after'}``: the highest sample, its
        time and the step's length (from the first event), and the events
        up to it (the last two)."""
        start = self.events[0][0] if self.events else self.samples[0][0]
        end = self.events[-1][0] if self.events else self.samples[-1][0]
        at, mb = max(self.samples, key=lambda s: s[1])
        before = [name for t, name in self.events if t <= at]
        return dict(mb=mb, at_s=at - start, of_s=end - start,
                    after=before[-2:])
