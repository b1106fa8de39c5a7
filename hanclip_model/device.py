"""Where work runs: one rule for the device and one for the number of cores.

Device: the one asked for, else env HANCLIP_DEVICE, else CUDA when torch sees a GPU, else
the CPU; `index`, `search`, `train` and `bench` all ask here. Cores: the CPU affinity mask
where there is one (a container or `taskset` may allow fewer cores than the machine has).
"""

from __future__ import annotations

import os

DEVICE_ENV = "HANCLIP_DEVICE"


def pick_device(requested: str | None = None) -> str:
    """`requested`, else env HANCLIP_DEVICE, else "cuda" when available, else "cpu"."""
    requested = requested or os.environ.get(DEVICE_ENV)
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_cores() -> int:
    """How many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
