"""`warmstart compare --ray ADDRESS`: the comparison's runs as parallel tasks on a Ray cluster.

`ray_map(options, console)` is a map function for `compare.run_comparison`: it runs the
comparison's work for each planned run (its own `warmstart train` process) as a Ray task that
reserves `--ray-cpus` CPUs (Ray sets OMP_NUM_THREADS to that, so torch in the
run uses them) and `--ray-gpus` GPUs; as many run at once as the cluster has room for. Results
come back as each run's summary, so the table and report are the same as for a local
comparison. Workers must see the same files as this machine (output folder and data on a
shared filesystem) and have warmstart installed.

Ray is an optional extra (`pip install 'warmstart[ray]'`) and is imported only here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.console import Console

from warmstart.errors import WarmstartError

T = TypeVar("T")
R = TypeVar("R")
# The map function's shape (`compare.MapFn`), generic here: this module knows nothing of
# what a run is, so compare and raysweep do not import each other.
MapFn = Callable[[Callable[[T], R], Sequence[T], Callable[[int, R], None]], list[R]]


@dataclass(frozen=True)
class RayOptions:
    """Where and how big: `address` is `local` (start Ray on this machine), `auto` (the
    cluster this machine belongs to) or a cluster address such as `ray://head:10001`."""

    address: str = "local"
    cpus: float = 1.0  # per run
    gpus: float = 0.0  # per run


def _call(work: Callable[[Any], Any], item: Any) -> Any:
    """A Ray task: `work(item)` on a worker (`work` travels pickled, by reference)."""
    return work(item)


def ray_map(options: RayOptions, console: Console) -> MapFn:
    """A map function that runs each item's work as a Ray task.

    Raises:
        WarmstartError: Ray is not installed, or the per-run resources are not positive.
    """
    try:
        import ray
    except ImportError:
        raise WarmstartError("--ray needs Ray, an optional extra: pip install "
                             "'warmstart[ray]'") from None
    if options.cpus <= 0 or options.gpus < 0:
        raise WarmstartError("--ray-cpus must be > 0 and --ray-gpus >= 0")

    def map_on_ray(work: Callable[[T], R], items: Sequence[T],
                   done: Callable[[int, R], None]) -> list[R]:
        """Every item as a task, as many at once as the cluster has room for; results in
        `items` order. Joins the Ray session already open in this process if there is one
        (so a caller can `ray.init(num_cpus=2)` first), else connects to `options.address`,
        and leaves again."""
        started_here = not ray.is_initialized()
        if started_here:
            local = options.address == "local"
            ray.init(address=None if local else options.address, log_to_driver=False,
                     **({"include_dashboard": False} if local else {}))
        task = ray.remote(num_cpus=options.cpus, num_gpus=options.gpus, max_retries=0)(_call)
        pending = {task.remote(work, item): i for i, item in enumerate(items)}
        console.print(f"{len(items)} runs sent to Ray ({options.cpus:g} CPUs"
                      + (f", {options.gpus:g} GPUs" if options.gpus else "") + " each)")
        results: dict[int, R] = {}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # a run's own error, as if run here
                    raise (e.cause if isinstance(e.cause, Exception) else e) from None
                done(i, results[i])
        finally:
            for ref in pending:  # a failed or interrupted comparison stops the rest (and
                ray.cancel(ref)  # their `warmstart train` processes) instead of leaving them
            if started_here:
                ray.shutdown()
        return [results[i] for i in range(len(items))]

    return map_on_ray


def add_options(p: Any, what: str) -> None:
    """--ray, --ray-cpus, --ray-gpus on a command-line parser: `what` (runs, trials) as
    parallel Ray tasks."""
    p.add_argument("--ray", metavar="ADDRESS", help=f"train the {what} in parallel as Ray tasks "
                   "(pip install 'warmstart[ray]'): local (start Ray here), auto (this "
                   "machine's cluster) or a cluster address (ray://head:10001)")
    p.add_argument("--ray-cpus", type=float, default=1.0, help=f"CPUs each of the {what} "
                   "reserves on Ray (its torch threads; default: 1)")
    p.add_argument("--ray-gpus", type=float, default=0.0,
                   help=f"GPUs each of the {what} reserves on Ray (default: 0)")


def map_from_args(args: Any) -> Any:
    """With --ray: a map function running each piece of work as a Ray task; else None."""
    if args.ray is None:
        return None
    return ray_map(RayOptions(args.ray, args.ray_cpus, args.ray_gpus),
                   Console(stderr=True, quiet=args.quiet))
