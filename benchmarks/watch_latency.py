"""`hanclip watch`: how soon a copied photo is found, and what an idle watch costs.

    python benchmarks/watch_latency.py [--work DIR] [--copies 5] [--idle 30] [--tiny]

A `hanclip serve --watch FOLDER` runs with its model loaded; 12-MP JPEGs are copied into the
folder one at a time. For each, from the moment its copy is finished (the file closed): when
its row is in SQLite (polled), when the running server's answer holds it (polled over one
keep-alive connection), and, for other copies, when a fresh `hanclip search` process (its own
answer, not the server's) lists it, its start-up included. Targets: 3 s to either search
(the watch lets a changed file settle for 0.5 s before indexing it). Then a plain `hanclip watch`
with nothing changing: its CPU time over `--idle` seconds, from /proc/PID/stat (target: under
1 % of a core), and its exit code after SIGTERM (0).

The bundle is the real-size random-weight one of `speed.py` (true cost), or with `--tiny` the
tests' tiny bundle (a quick check of the machinery, not of the model's cost).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import entry
from benchkit.figures import Check, Spread, Target
from benchkit.inputs import PHOTO_SIZE, ensure_photos, prepare_inputs, tiny_bundle
from benchkit.processes import BenchmarkError, LoadSampler, LoadSummary, log
from benchkit.server import running_server
from benchkit.workspace import Workspace, default_work, isolated_env, isolated_process

REPO = Path(__file__).resolve().parents[1]
SERVER_FOUND = Target(
    "server_found_s", "copy finished to the server's answer, max", "<=", 3.0, " s"
)
CLI_FOUND = Target("cli_found_s", "copy finished to a fresh `hanclip search`, max", "<=", 3.0, " s")
IDLE_CPU = Target("idle_cpu_percent", "idle watch, CPU of one core", "<", 1.0, " %")
INITIAL_PHOTOS = 2  # in the folder before the watch starts (its catch-up)
POLL_S = 0.05
FOUND_DEADLINE_S = 60.0
QUIET_DEADLINE_S = 180.0
# The CPU counters' unit in /proc/PID/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Results:
    bundle: str
    photo_size: tuple[int, int]
    cores: int
    load_average: LoadSummary
    indexed_s: Spread  # copy finished to its row in SQLite
    server_found_s: Spread  # copy finished to the running server's answer holding it
    cli_found_s: Spread  # copy finished to the end of the first fresh search that lists it
    cli_search_s: Spread  # those searches' own wall times, spawn to exit
    idle_window_s: float
    idle_cpu_s: float
    sigterm_exit_code: int
    work: str
    wall_s: float

    @property
    def idle_cpu_percent(self) -> float:
        return 100 * self.idle_cpu_s / self.idle_window_s


def checks(results: Results) -> list[Check]:
    return [
        Check.of(SERVER_FOUND, results.server_found_s.max),
        Check.of(CLI_FOUND, results.cli_found_s.max),
        Check.of(IDLE_CPU, results.idle_cpu_percent),
    ]


def command(*args: str) -> list[str]:
    """`hanclip ARGS...` from this checkout."""
    return [sys.executable, "-m", "hanclip_cli", *args]


def row_exists(library: Path, path: Path) -> bool:
    import sqlite3
    from contextlib import closing

    try:
        uri = f"file:{library / 'library.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=0.1)) as conn:
            query = "SELECT 1 FROM photos WHERE path = ?"
            return conn.execute(query, [str(path)]).fetchone() is not None
    except sqlite3.Error:
        return False


def wait_for(found: Callable[[], bool], what: str) -> float:
    """perf_counter when `found()` first holds."""
    deadline = time.perf_counter() + FOUND_DEADLINE_S
    while not found():
        if time.perf_counter() > deadline:
            raise BenchmarkError(f"{what}: not found within {FOUND_DEADLINE_S:.0f} s")
        time.sleep(POLL_S)
    return time.perf_counter()


def copy_in(source: Path, folder: Path, name: str) -> tuple[Path, float]:
    """The copy, and perf_counter once it is finished (closed)."""
    target = folder / name
    shutil.copyfile(source, target)
    return target, time.perf_counter()


def server_paths(client: httpx.Client) -> set[str]:
    """The paths of the running server's answer (none while its library is empty: then it
    answers with an error)."""
    answer = client.get("/api/search", params={"q": "사진", "n": 200})
    if answer.status_code != 200:
        return set()
    return {hit["path"] for hit in answer.json()["results"]}


def measure_server(
    client: httpx.Client, library: Path, folder: Path, photos: Sequence[Path]
) -> tuple[list[float], list[float]]:
    indexed, found = [], []
    for number, source in enumerate(photos):
        path, done = copy_in(source, folder, f"server-{number}.jpg")
        in_db = wait_for(lambda p=path: row_exists(library, p), f"{path} in SQLite")
        in_answer = wait_for(
            lambda p=path: str(p) in server_paths(client), f"{path} from the server"
        )
        indexed.append(in_db - done)
        found.append(in_answer - done)
        log(f"server: {path.name} indexed {in_db - done:.2f} s, answered {in_answer - done:.2f} s")
    return indexed, found


def measure_cli(
    ws: Workspace, library: Path, folder: Path, photos: Sequence[Path]
) -> tuple[list[float], list[float]]:
    """Fresh searches one after another from the copy's end, each answering on its own."""
    found, walls = [], []
    alone = {"HANCLIP_VIA_SERVER": "0", "HANCLIP_RESIDENT": "0"}
    for number, source in enumerate(photos):
        path, done = copy_in(source, folder, f"cli-{number}.jpg")
        while True:
            run = ws.search("사진", library, "-n", "200", env=alone)
            walls.append(run.wall_s)
            if str(path) in {hit["path"] for hit in json.loads(run.stdout)}:
                break
            if time.perf_counter() - done > FOUND_DEADLINE_S:
                raise BenchmarkError(f"{path}: no fresh search found it")
        found.append(time.perf_counter() - done)
        log(f"cli: {path.name} found {found[-1]:.2f} s after its copy")
    return found, walls


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`, all its threads (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_quiet(pid: int) -> None:
    """Until a second passes in which `pid` uses under 10 ms of CPU: the image model's
    warm-up after the catch-up is over (a real-size one loads for seconds)."""
    deadline = time.perf_counter() + QUIET_DEADLINE_S
    while time.perf_counter() < deadline:
        before = cpu_s(pid)
        time.sleep(1.0)
        if cpu_s(pid) - before < 0.01:
            return
    raise BenchmarkError(f"process {pid} still busy {QUIET_DEADLINE_S:.0f} s after its start")


def measure_idle(env: dict[str, str], bundle: Path, library: Path, folder: Path, idle_s: float):
    """A `hanclip watch` left alone: (CPU seconds over `idle_s`, exit code after SIGTERM)."""
    args = [str(folder), "--library", str(library), "--model", str(bundle), "--json"]
    process = subprocess.Popen(
        command("watch", *args, "--no-ocr"), env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        if not process.stdout.readline():  # its catch-up, applied
            raise BenchmarkError("hanclip watch exited before its first batch")
        wait_quiet(process.pid)
        start = cpu_s(process.pid)
        time.sleep(idle_s)
        used = cpu_s(process.pid) - start
        log(f"idle: {used:.3f} CPU s in {idle_s:.0f} s")
        process.send_signal(signal.SIGTERM)
        return used, process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def inputs_for(work: Path, count: int, tiny: bool) -> tuple[Path, str, Sequence[Path]]:
    """(bundle, where it came from, `count` 12-MP JPEGs), made once per work directory."""
    if not tiny:
        inputs = prepare_inputs(work, count, None)
        return inputs.bundle, inputs.bundle_origin, inputs.photos
    folder = work / f"photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}"
    return tiny_bundle(work / "tiny"), "tiny", ensure_photos(folder, count, PHOTO_SIZE)


def run_benchmark(work: Path, copies: int, idle_s: float, tiny: bool) -> Results:
    from hanclip_model.device import usable_cores

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)
    env.update(PYTHONPATH=str(REPO), HANCLIP_DEVICE="cpu", PYTHONUNBUFFERED="1")
    with isolated_process(env), LoadSampler(usable_cores()) as load:
        bundle, origin, photos = inputs_for(work, INITIAL_PHOTOS + 2 * copies, tiny)
        ws = Workspace(work, bundle, env, hanclip=command())
        library, folder = ws.fresh("watch-library"), ws.fresh("watch-photos")
        folder.mkdir()
        for source in photos[:INITIAL_PHOTOS]:
            shutil.copyfile(source, folder / source.name)
        later = photos[INITIAL_PHOTOS:]
        load.probe("before server")
        log("server: starting `hanclip serve --watch`")
        args = ["--library", str(library), "--model", str(bundle), "--watch", str(folder)]
        with running_server(args, env) as server:
            with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
                wait_for(lambda: len(server_paths(client)) >= INITIAL_PHOTOS, "the catch-up")
                wait_quiet(server.pid)
                indexed, served = measure_server(client, library, folder, later[:copies])
            cli_found, cli_walls = measure_cli(ws, library, folder, later[copies:])
        log(f"idle: `hanclip watch` alone for {idle_s:.0f} s")
        idle_cpu, exit_code = measure_idle(env, bundle, library, folder, idle_s)
        load.probe("end")
    return Results(
        bundle=f"{bundle} ({origin})",
        photo_size=PHOTO_SIZE,
        cores=usable_cores(),
        load_average=load.summary(),
        indexed_s=Spread.of(indexed),
        server_found_s=Spread.of(served),
        cli_found_s=Spread.of(cli_found),
        cli_search_s=Spread.of(cli_walls),
        idle_window_s=idle_s,
        idle_cpu_s=idle_cpu,
        sigterm_exit_code=exit_code,
        work=str(work),
        wall_s=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    example = "python benchmarks/watch_latency.py --json watch.json"
    parser = entry.parser(__doc__, example, work="kept; default: user cache")
    parser.add_argument("--copies", type=int, default=5, help="photos copied per search (5)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds (30)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny bundle")
    args = parser.parse_args(argv)
    if args.copies < 1 or args.idle <= 0:
        parser.error("--copies must be at least 1, --idle above 0")
    work = (args.work or default_work("watch-latency")).resolve()
    return entry.finish(
        lambda: run_benchmark(work, args.copies, args.idle, args.tiny),
        args.json_path,
        title="hanclip watch latency and idle cost (offline: random weights)",
        checks=checks,
        errors=(httpx.HTTPError, subprocess.TimeoutExpired),
    )


if __name__ == "__main__":
    sys.exit(main())
