"""The GPU check (``tools/analysis/gpu_check.py``), with PyTorch and
torchvision alone: its sections by kind and ``sections.run_all``."""
