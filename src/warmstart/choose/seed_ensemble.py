"""`compare --seeds N` (N >= 2): the ensemble of the best strategy's seeds, as one more row.

Seeds of one strategy are the cheapest ensemble there is: the runs exist already, trained on
the same split. The row is that strategy's seeds averaged with equal weights (exchangeable
runs: choosing weights on a validation split of a few hundred examples would mostly fit its
noise), written to `ensemble-<strategy>/` in the comparison folder and scored on the same test
split; its costs are the seeds' summed training. The folder is a full ensemble: `predict`,
`evaluate`, `export` and `serve` take it.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console

from warmstart.errors import WarmstartError
from warmstart.report.build import Groups, best_strategy
from warmstart.report.table import summarize
from warmstart.ship.ensemble import ensemble


def add_seed_ensemble(out: Path, groups: Groups, console: Console) -> None:
    """Add the row `ensemble of <best strategy> (N seeds)` to `groups` (in place), when the
    strategies ran at two seeds or more and have test metrics; a run that cannot take part
    (e.g. saved no model) leaves a note instead of the row."""
    rows = summarize(groups)
    best = best_strategy(rows)
    runs = groups[best.strategy]
    if len(runs) < 2 or math.isnan(best.mean[best.quality.key]):
        return
    folder = out / f"ensemble-{runs[0][0].rsplit('-seed', 1)[0]}"
    try:
        result = ensemble([out / name for name, _ in runs], folder, "equal", overwrite=True)
    except WarmstartError as e:
        console.print(f"note: no ensemble row: {e}", highlight=False)
        return
    groups[f"ensemble of {best.strategy} ({len(runs)} seeds)"] = [(folder.name, result.summary)]
    console.print(f"ensemble of {best.strategy}'s {len(runs)} seeds written to {folder}",
                  highlight=False)
