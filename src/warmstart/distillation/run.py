"""`warmstart distill`: train a student on a teacher's outputs, then compare the two.

A distillation is an ordinary run (`training.run.train`, the one loop) given a teacher: the
teacher supplies the student where it is a layer-dropped copy of itself, and the soft
targets the distillation loss reads (`training/distill_loss.py`). Afterwards the teacher and
the saved student are measured side by side, and the summary and model card say how much of
the teacher's quality the student keeps at what speed.

The config starts from the teacher's own: its data, task, columns, epochs and batch sizes,
so `warmstart distill --teacher RUN --student keep:0,2,4` distils on the data the teacher
learned; `-c` and `key=value` override any of it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.config import (
    RunConfig,
    build_config,
    read_run_config,
    read_tree,
    with_overrides,
)
from warmstart.distillation.compare import print_side_by_side, side_by_side
from warmstart.distillation.teacher import load_teacher
from warmstart.errors import WarmstartError
from warmstart.files import atomic_write_json
from warmstart.report.card import write_model_card
from warmstart.summary import SUMMARY, RunSummary
from warmstart.training.run import run_dir_of, train

KEEP = "keep:"  # `--student keep:0,2,4` / `keep:every_other`: a layer-dropped teacher
# Sections of the teacher's config a distillation inherits: the same data, read the same
# way, for as long. Not its model, strategy or learning rate (the student's are its own).
INHERITED = ("data", "task", "train")


def distill(cfg: RunConfig, *, quiet: bool = False, resume: bool = False) -> RunSummary:
    """Distil `distill.teacher` into the student `cfg` describes; write the run directory
    (with the teacher-vs-student comparison in its summary and card); return the summary.

    Raises:
        WarmstartError: a missing or unfinished teacher, labels that differ from the
            teacher's, a bad `distill.keep_layers`, an unreadable unlabelled file.
    """
    if cfg.distill.teacher is None:
        raise WarmstartError("distill.teacher is not set; pass --teacher RUN (a finished run "
                             "directory)")
    teacher = load_teacher(cfg)
    summary = train(cfg, quiet=quiet, resume=resume, teacher=teacher)
    run_dir = run_dir_of(cfg)
    if not cfg.output.save_model:
        return summary  # nothing saved to measure as users would load it
    report = side_by_side(teacher, str(run_dir), cfg)
    summary = dataclasses.replace(summary, distill=report)
    write_model_card(run_dir, summary, cfg)
    atomic_write_json(run_dir / SUMMARY, summary.to_dict())
    print_side_by_side(report, Console())
    return summary


def student_overrides(student: str) -> list[str]:
    """`--student` as config overrides: `keep:SPEC` -> distill.keep_layers, else
    model.name."""
    if student.startswith(KEEP):
        spec = student.removeprefix(KEEP)
        if not spec:
            raise WarmstartError("--student keep: needs the blocks to keep, e.g. "
                                 "keep:every_other or keep:0,2,4")
        return [f"distill.keep_layers={spec}"]
    return [f"model.name={student}"]


def distill_config(teacher: str | None, student: str | None, config: str | None,
                   overrides: list[str], *, unlabelled: str | None = None,
                   overwrite: bool = False) -> RunConfig:
    """The config of a new distillation: the teacher's data, task and training sections,
    then `config`, `overrides` and the flags, and a run name after teacher and student.

    Raises:
        WarmstartError: no teacher or student given, a bad key or value.
    """
    if not teacher or not student:
        raise WarmstartError("give the teacher and the student: --teacher RUN --student "
                             "MODEL (or --student keep:0,2,4 for a layer-dropped teacher)")
    tree = _inherited(Path(teacher))
    for section, values in read_tree(config).items():  # the file wins, key by key
        mine = tree.get(section)
        tree[section] = {**mine, **values} if isinstance(mine, dict) and isinstance(
            values, dict) else values
    flags = [f"distill.teacher={teacher}", *student_overrides(student)]
    if unlabelled:
        flags.append(f"distill.unlabelled={unlabelled}")
    if overwrite:
        flags.append("output.overwrite=true")
    cfg = build_config(with_overrides(tree, [*overrides, *flags]))
    if cfg.output.name is None:  # next to the teacher, named after both
        slug = student.replace(KEEP, "keep-").replace(",", "-").replace("/", "_")
        slug = slug.replace(":", "_")
        name = f"{Path(teacher).resolve().name}-distill-{Path(slug).name}"
        cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, name=name))
    return cfg


def _inherited(teacher: Path) -> dict[str, Any]:
    """The sections a distillation inherits from the teacher run's config.yaml (none when
    the teacher is a bare model folder)."""
    saved = teacher / "config.yaml"
    if not saved.is_file():
        return {}
    tree = read_tree(saved)
    out = {k: v for k, v in tree.items() if k in INHERITED and isinstance(v, dict)}
    # The teacher's base model: a layer-dropped student descends from it (a model.name
    # student replaces it); its tokens per example, so both read the same text.
    model = tree.get("model", {})
    out["model"] = {k: model[k] for k in ("name", "max_length") if k in model}
    out["output"] = {"dir": str(teacher.resolve().parent)}
    return out


def config_of(args: argparse.Namespace) -> RunConfig:
    """The config `warmstart distill` runs: a new one, or a stopped run's own (--resume)."""
    if not args.resume:
        return distill_config(args.teacher, args.student, args.config, list(args.overrides),
                              unlabelled=args.unlabelled, overwrite=args.overwrite)
    if args.teacher or args.student or args.config or args.overrides or args.overwrite:
        raise WarmstartError("--resume takes the run's saved config.yaml; drop the other "
                             "options (start a new distillation to change settings)")
    run = Path(args.resume)
    if not (run / "config.yaml").is_file():
        raise WarmstartError(f"{run} has no config.yaml: pass a run directory that "
                             "`warmstart distill` created")
    cfg = read_run_config(run / "config.yaml")
    return dataclasses.replace(cfg, output=dataclasses.replace(
        cfg.output, dir=str(run.parent), name=run.name))
