"""The `ensemble` and `soup` verbs of the command line: their arguments and what they print.

    warmstart ensemble RUN RUN... --out DIR [--weights greedy|equal] [--overwrite]
    warmstart soup RUN RUN... --out DIR [--how greedy|uniform] [--overwrite]

Kept beside the modules that do the work (`ensemble.py`, `soup.py`), which are imported only
when the verb runs, so that building the parser stays as light as the rest of `cli.py`.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_ensemble(args: argparse.Namespace) -> int:
    from warmstart.ship.ensemble import ensemble

    result = ensemble(args.runs, args.out, args.weights, overwrite=args.overwrite)
    s = result.summary
    print(f"ensemble of {sum(w > 0 for w in result.weights)} runs written to {result.dir} "
          f"({result.note})")
    for run, weight in zip(result.runs, result.weights):
        print(f"  {weight:6.3f}  {run}")
    _print_metrics(s.metric, s.validation, s.test)
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    from warmstart.ship.soup import soup

    result = soup(args.runs, args.out, args.how, overwrite=args.overwrite)
    s = result.summary
    print(f"{args.how} soup of {len(result.kept)} of {len(result.runs)} runs written to "
          f"{result.dir} (a run directory)")
    for run in result.runs:
        print(f"  {'kept' if run in result.kept else 'left out':>8}  {run}")
    _print_metrics(s.metric, s.validation, s.test)
    return 0


def _print_metrics(metric: str, validation: dict[str, Any], test: dict[str, Any]) -> None:
    names = [metric, *(k for k in ("accuracy", "f1_macro", "spearman", "loss") if k != metric)]
    for split, values in (("validation (weights chosen here)", validation), ("test", test)):
        shown = [f"{k} {values[k]:.4f}" for k in names if isinstance(values.get(k), float)]
        if shown:
            print(f"{split}: {'  '.join(shown)}")


def add_parsers(sub: Any) -> None:
    """Add the `ensemble` and `soup` verbs to the command line's subparsers."""
    p = sub.add_parser("ensemble", help="average finished runs' probabilities into one model "
                       "(weights chosen on validation); predict/evaluate/export/serve take it")
    _runs_and_out(p, "the same data and split (e.g. the seeds of a compare)",
                  "an ensemble (members copied in)")
    p.add_argument("--weights", choices=["greedy", "equal"], default="greedy",
                   help="greedy: Caruana's forward selection with replacement on validation "
                   "(default); equal: the plain mean")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("soup", help="average finished runs' weights into one model (model "
                       "soup); the result is a run directory")
    _runs_and_out(p, "one model, on the same data and split", "a soup (a run directory)")
    p.add_argument("--how", choices=["greedy", "uniform"], default="greedy",
                   help="greedy: add runs best first while validation does not drop (default); "
                   "uniform: the mean of all")
    p.set_defaults(func=cmd_soup)


def _runs_and_out(p: argparse.ArgumentParser, runs: str, out: str) -> None:
    """RUN..., --out and --overwrite, which both verbs take."""
    p.add_argument("runs", nargs="+", metavar="RUN", help=f"run directories trained on {runs}")
    p.add_argument("--out", required=True, help=f"new folder for {out}")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier run of "
                   "this verb wrote at --out")
