"""`warmstart compare --ray ADDRESS`: the comparison's runs as parallel tasks on a Ray cluster.

Each planned run is still its own `warmstart train` process (`compare.ensure_run`), started by
a Ray task that reserves `--ray-cpus` CPUs (Ray sets OMP_NUM_THREADS to that, so torch in the
run uses them) and `--ray-gpus` GPUs; as many run at once as the cluster has room for. Results
come back as each run's summary, so the table and report are the same as for a local
comparison. Workers must see the same files as this machine (output folder and data on a
shared filesystem) and have warmstart installed.

Ray is an optional extra (`pip install 'warmstart[ray]'`) and is imported only here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.errors import WarmstartError


@dataclass(frozen=True)
class RayOptions:
    """Where and how big: `address` is `local` (start Ray on this machine), `auto` (the
    cluster this machine belongs to) or a cluster address such as `ray://head:10001`."""

    address: str = "local"
    cpus: float = 1.0  # per run
    gpus: float = 0.0  # per run


def _train_one(run: Any, log_dir: Path) -> tuple[dict[str, Any], bool, float]:
    """A Ray task: train (or reuse) one planned run; (summary, was it trained, seconds)."""
    from warmstart.choose.compare import ensure_run

    started = time.perf_counter()
    summary, trained = ensure_run(run, log_dir)
    return summary, trained, time.perf_counter() - started


def run_on_ray(runs: list[Any], log_dir: Path, options: RayOptions, console: Console
               ) -> list[tuple[dict[str, Any], bool]]:
    """Train every run as a Ray task; (summary, was it trained) per run, in `runs` order.

    Joins the Ray session already open in this process if there is one (so a caller can
    `ray.init(num_cpus=2)` first), else connects to `options.address`, and leaves again.
    """
    try:
        import ray
    except ImportError:
        raise WarmstartError("--ray needs Ray, an optional extra: pip install "
                             "'warmstart[ray]'") from None
    if options.cpus <= 0 or options.gpus < 0:
        raise WarmstartError("--ray-cpus must be > 0 and --ray-gpus >= 0")
    started_here = not ray.is_initialized()
    if started_here:
        local = options.address == "local"
        ray.init(address=None if local else options.address, log_to_driver=False,
                 **({"include_dashboard": False} if local else {}))
    task = ray.remote(num_cpus=options.cpus, num_gpus=options.gpus, max_retries=0)(_train_one)
    pending = {task.remote(run, log_dir): i for i, run in enumerate(runs)}
    console.print(f"{len(runs)} runs sent to Ray ({options.cpus:g} CPUs"
                  + (f", {options.gpus:g} GPUs" if options.gpus else "") + " each)")
    results: dict[int, tuple[dict[str, Any], bool]] = {}
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                summary, trained, seconds = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # a run's own error, as if run here
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
            test = summary.get("test") or summary["validation"]
            console.print(f"[{len(results) + 1}/{len(runs)}] {runs[i].run_dir.name} "
                          + (f"trained in {seconds:.0f}s" if trained else "finished earlier, "
                             "reused") + f" | accuracy {test['accuracy']:.4f}", highlight=False)
            results[i] = (summary, trained)
    finally:
        for ref in pending:  # a failed or interrupted comparison stops the rest (and their
            ray.cancel(ref)  # `warmstart train` processes) instead of leaving them running
        if started_here:
            ray.shutdown()
    return [results[i] for i in range(len(runs))]
