"""Peak memory of exact soft retrieval over a bank that does not fit a logit matrix.

50,000 queries against a 200,000-row bank (D=512) would need a 40 GB float32 logit matrix
computed naively; the streamed softmax in `trainer.retrieval` must stay under 2 GB of extra
memory. The bank is a np.memmap in a temporary file, as a cached bank on disk would be.

Extra memory is the peak resident set (VmHWM) during the call minus the resident set just
before it; the peak is reset first (Linux /proc/self/clear_refs) so that building the inputs
does not count. Pages of the memmapped bank that the call reads count as resident too
(reclaimable page cache, but reported as part of the figure). The process exits 1 when the
extra memory is over the 2 GB target: it is a limit the streamed softmax must hold.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchkit import entry
from benchkit.figures import Check, Target
from benchkit.processes import BenchmarkError, proc_status_bytes

from hanclip_model.device import pick_device
from trainer.retrieval import soft_retrieve

EXTRA_MEMORY = Target("extra_peak_gib", "extra peak memory", "<", 2.0, " GiB")
ROWS_PER_WRITE = 10_000


@dataclass(frozen=True)
class Results:
    queries: int
    bank: int
    dim: int
    tau: float
    device: str
    wall_s: float
    extra_peak_bytes: int
    file_pages_bytes: int  # of the extra, pages of files: mostly the memmapped bank


def checks(results: Results) -> list[Check]:
    return [Check.of(EXTRA_MEMORY, results.extra_peak_bytes / 1024**3)]


def status_bytes(field: str) -> int:
    """A kB field of this process's /proc/self/status in bytes; the figure needs Linux."""
    value = proc_status_bytes(field)
    if value is None:
        raise BenchmarkError(f"no {field} in /proc/self/status: this benchmark needs Linux")
    return value


def reset_peak_rss() -> bool:
    """Make VmHWM restart from the current resident set; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def fill_unit_rows(out: np.ndarray, rng: np.random.Generator) -> None:
    # In slices, so that building a 400 MB bank never holds a second full copy.
    for start in range(0, out.shape[0], ROWS_PER_WRITE):
        rows = rng.standard_normal((min(ROWS_PER_WRITE, out.shape[0] - start), out.shape[1]))
        out[start : start + rows.shape[0]] = rows / np.linalg.norm(rows, axis=1, keepdims=True)


def measure(args: argparse.Namespace) -> Results:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        bank_path = Path(tmp) / "bank.f32"
        writer = np.memmap(bank_path, dtype=np.float32, mode="w+", shape=(args.bank, args.dim))
        fill_unit_rows(writer, rng)
        writer.flush()
        del writer
        bank = np.memmap(bank_path, dtype=np.float32, mode="r", shape=(args.bank, args.dim))
        queries = np.empty((args.queries, args.dim), dtype=np.float32)
        fill_unit_rows(queries, rng)

        baseline = status_bytes("VmRSS")
        file_pages_before = status_bytes("RssFile")
        if not reset_peak_rss():
            # Without a reset the peak so far is the best baseline available (an underestimate
            # of the extra memory only if building the inputs peaked above the call).
            baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        result = soft_retrieve(queries, bank, args.tau, device=args.device)
        seconds = time.perf_counter() - started
        extra = status_bytes("VmHWM") - baseline
        file_pages = status_bytes("RssFile") - file_pages_before
        del result, bank
    device = str(pick_device(args.device))
    return Results(args.queries, args.bank, args.dim, args.tau, device, seconds, extra, file_pages)


def main(argv: Sequence[str] | None = None) -> int:
    example = "python benchmarks/soft_retrieval_memory.py --queries 5000 --bank 20000"
    parser = entry.parser(__doc__, example)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--bank", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    return entry.finish(
        lambda: measure(args),
        args.json_path,
        title="soft retrieval: peak memory beyond the inputs",
        checks=checks,
        fail_on_miss=True,
    )


if __name__ == "__main__":
    sys.exit(main())
