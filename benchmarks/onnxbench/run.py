"""One whole run of `benchmarks/index_onnx.py`."""

from __future__ import annotations

import time
from pathlib import Path

from benchkit.environment import environment
from benchkit.processes import LoadSampler
from benchkit.workspace import isolated_env, isolated_process

from hanclip_model.device import usable_cores
from onnxbench.bundles import Models, build_models, photo_folder, prepare_bundles, startup_folder
from onnxbench.encoder_stage import measure_in_process
from onnxbench.figures import Results, Sizes
from onnxbench.index_runs import backends, measure_end_to_end, measure_startup


def run_benchmark(
    work: Path,
    sizes: Sizes,
    *,
    quantize: bool = False,
    models: Models | None = None,
    probe_cores: bool = True,
) -> Results:
    """Every measurement of one run. `models`: given ones (tests: tiny); default the
    real-size random models, built once per work directory."""
    started = time.perf_counter()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)
    with isolated_process(env), LoadSampler(usable_cores()) as load:
        if probe_cores:
            load.probe("start")
        models = models or build_models(work)
        bundles = prepare_bundles(work, models)
        folder, photos = photo_folder(work, sizes)
        one = startup_folder(work, photos[0])
        backs = backends(work, bundles, env)
        startup = measure_startup(backs, one, sizes.runs, sizes.warmup)
        end_to_end = measure_end_to_end(backs, folder, photos, sizes.runs)
        in_process = measure_in_process(bundles, photos, sizes, work, quantize)
        if probe_cores:
            load.probe("end")
    return Results(
        environment=environment(usable_cores()),
        sizes=sizes,
        image_spec=models.image_spec,
        export_s=bundles.export_s,
        export_already=bundles.export_already,
        export_min_cosine=bundles.export_min_cosine,
        startup=startup,
        encoder=in_process.encoder,
        end_to_end=end_to_end,
        int8=in_process.int8,
        load_average=load.summary(),
        work=str(work),
        wall_s=time.perf_counter() - started,
    )
