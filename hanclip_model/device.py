"""Where work runs: one rule for the device and one for the number of cores.

Device: the one asked for, else `settings.DEVICE`, else CUDA when torch sees a GPU, else
the CPU; `index`, `search`, `train` and `bench` all ask here. Cores: the CPU affinity mask
where there is one (a container or `taskset` may allow fewer cores than the machine has).

torch is optional (`pip install 'hanclip[train]'`): without it the device is the CPU, or
CUDA through ONNX Runtime's CUDA provider when `onnxruntime-gpu` is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_model import settings
from hanclip_model.errors import BundleError

if TYPE_CHECKING:
    import torch

# The devices torch and ONNX Runtime run hanclip's encoders on.
DEVICE_NAMES = "cpu, cuda, cuda:N (the GPU numbered N) or mps"
_DEVICE_NAME = re.compile(r"cpu|mps|cuda(:\d+)?")


def pick_device(requested: str | None = None) -> str:
    """`requested`, else `settings.DEVICE`, else "cuda" when available, else "cpu"."""
    requested = requested_device(requested)
    if requested:
        return requested
    if not torch_available():
        return "cuda" if onnx_cuda_available() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def requested_device(requested: str | None = None) -> str | None:
    """The device asked for (argument, else `settings.DEVICE`), or None: nothing imported.
    One that hanclip cannot run on is a `BundleError` (`check_device`)."""
    if requested:
        return check_device(requested)
    chosen = settings.DEVICE.get()
    return None if not chosen else check_device(chosen, origin=f" in {settings.DEVICE.name}")


def check_device(device: str, *, origin: str = "") -> str:
    """`device` when it names a device hanclip can run on, else a one-line `BundleError`
    listing those (`origin`: where the name came from): asked before any work, rather than
    met deep inside torch."""
    if _DEVICE_NAME.fullmatch(device) is None:
        raise BundleError(f"unknown device {device!r}{origin}: use {DEVICE_NAMES}")
    return device


def is_cuda(device: str | torch.device) -> bool:
    """Whether `device` ("cuda", "cuda:1", or a torch.device of those) is an NVIDIA GPU: the
    devices that get autocast, pinned host memory and ONNX Runtime's CUDA provider."""
    return str(device).split(":", 1)[0] == "cuda"


def torch_available() -> bool:
    """Whether torch is installed (found, not imported: importing it is slow)."""
    return importlib.util.find_spec("torch") is not None


EXPORTED_BUNDLE = (
    "use a bundle that carries its ONNX encoders (`hanclip export BUNDLE` on a machine with "
    "torch, then copy the bundle)"
)


def require_torch(what: str, *, instead: str | None = EXPORTED_BUNDLE) -> None:
    """Raise a one-line `BundleError` naming what to install when torch is missing, and
    what to do `instead` where there is another way (None: there is none)."""
    if not torch_available():
        other = f", or {instead}" if instead else ""
        raise BundleError(
            f"{what} needs torch, which is not installed: pip install 'hanclip[train]'{other}"
        )


def onnx_cuda_available() -> bool:
    """Whether ONNX Runtime can run on an NVIDIA GPU here (`onnxruntime-gpu` and a GPU)."""
    if not nvidia_gpu_present():
        return False
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver with a GPU is loaded (Linux), asked without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def usable_cores() -> int:
    """How many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
