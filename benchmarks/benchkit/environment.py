"""The machine and the software a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Environment:
    cores: int
    cpu: str
    platform: str
    python: str
    torch: str
    onnxruntime: str
    open_clip: str
    sentence_transformers: str
    cuda: bool


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows, else "unknown"."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment(cores: int) -> Environment:
    import hnswlib  # noqa: F401 - its presence is part of the environment
    import onnxruntime
    import open_clip
    import sentence_transformers
    import torch

    return Environment(
        cores=cores,
        cpu=cpu_model(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        open_clip=open_clip.__version__,
        sentence_transformers=sentence_transformers.__version__,
        cuda=torch.cuda.is_available(),
    )
