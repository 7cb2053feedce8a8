"""The `warmstart distill` verb's arguments, kept here so cli.py stays one thin function per
verb; argparse only, so building the parser loads nothing heavy."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `distill` verb's arguments (kept here: cli.py stays one thin function per verb)."""
    p = sub.add_parser("distill", help="train a smaller student on a finished run's outputs "
                       "and compare the two (quality, size, speed)")
    p.add_argument("-c", "--config", help="YAML config on top of the teacher's data, task and "
                   "training settings")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides (distill.temperature, distill.alpha, strategy...)")
    p.add_argument("--teacher", help="the teacher: a finished run directory")
    p.add_argument("--student", help="a model (as model.name), or keep:every_other / "
                   "keep:0,2,4: a copy of the teacher keeping those transformer blocks")
    p.add_argument("--unlabelled", metavar="FILE", help="texts without labels (CSV/TSV/"
                   "JSONL with data.text_column, or TXT: one per line) the teacher labels")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished or unfinished run of this name")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a stopped distillation from its latest checkpoint")
    return p
