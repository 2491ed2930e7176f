"""The one peak-memory measure of the project's tools."""
import resource

import torch


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak memory in MB: ``max_memory_allocated`` on CUDA,
    the peak resident set size (RSS) on CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
