"""Use a finished run: predict for new inputs, or evaluate on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from warmstart.config import RunConfig, read_run_config
from warmstart.data import LabelCoder
from warmstart.data.batches import Batches
from warmstart.data.readers import IMAGE_SUFFIXES, check_images, read_column, read_path
from warmstart.errors import WarmstartError
from warmstart.models import load_adapter
from warmstart.models.base import MODEL_FILE, Adapter, read_model_file
from warmstart.tasks import Task, task_from_dict
from warmstart.training.checkpoint import Checkpointer, is_finished
from warmstart.training.evaluate import predict_logits


def load_run(run_dir: str | Path) -> tuple[Adapter, Task, RunConfig]:
    """The fine-tuned model of a finished run, its task (label names, thresholds) and its
    config."""
    run = Path(run_dir)
    if not run.is_dir():
        raise WarmstartError(f"run directory {str(run)!r} not found; pass the folder "
                             "`warmstart train` printed (e.g. runs/minilm-l6-bbc-news-full)")
    if (run / MODEL_FILE).is_file():  # a model folder: a run's `model/`, or an exported one
        if (run.parent / "config.yaml").is_file():
            run = run.parent
        else:  # exported, or an ensemble: the columns are the defaults unless it saved a config
            adapter, labels = load_adapter(run)
            adapter.module.eval()
            cfg = read_run_config(run / "config.yaml") if (run / "config.yaml").is_file() \
                else RunConfig()
            return adapter, task_from_dict(read_model_file(run).get("task"), labels), cfg
    if not is_finished(run):
        if Checkpointer(run, 0, 1).latest() is not None:
            raise WarmstartError(f"{run} holds an unfinished run (it was stopped); finish it "
                                 f"with `warmstart train --resume {run}`, then use it")
        raise WarmstartError(f"{run} holds no finished run; train it (`warmstart train`) "
                             "and pass the run directory it prints")
    if not (run / "model").is_dir():
        raise WarmstartError(f"{run} saved no model (output.save_model=false); train it again "
                             "with output.save_model=true")
    cfg = read_run_config(run / "config.yaml")
    adapter, labels = load_adapter(run / "model")
    adapter.module.eval()
    return adapter, task_from_dict(read_model_file(run / "model").get("task"), labels), cfg


def logits_for(adapter: Adapter, inputs: list[Any], batch_size: int = 64,
               console: Console | None = None) -> np.ndarray:
    """Logits for raw inputs (texts, (text, pair) tuples or images), in input order; with a
    progress bar on `console` when it is a terminal."""
    encoded = adapter.encode(inputs)
    lengths = adapter.lengths(encoded) if adapter.lengths is not None else None
    batches = Batches(encoded, np.zeros(len(encoded), dtype=np.int64), adapter.collate,
                      batch_size, shuffle=False, lengths=lengths)
    # An exported ONNX model has no parameters: it runs on the CPU.
    device = next(adapter.module.parameters(), torch.empty(0)).device
    if console is None or console.quiet or not console.is_terminal:
        return predict_logits(adapter.module, batches, device)[0]
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("examples"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("evaluate", total=len(encoded))
        return predict_logits(adapter.module, batches, device,
                              lambda n: progress.advance(task, n))[0]


def predict(run_dir: str | Path, inputs: list[Any],
            kind: str | None = None) -> list[dict[str, Any]]:
    """For each input, what the run's task predicts: the label and every label's probability
    (classification), the labels over their thresholds and every probability (multilabel),
    or the score (regression).

    Args:
        run_dir: a finished run (or a saved model folder).
        inputs: texts, (text, pair) tuples, or images (paths or arrays).
        kind: "text" or "image" when the caller knows which the inputs are: a model of the
            other kind is then refused in one line.
    """
    adapter, task, _ = load_run(run_dir)
    if kind is not None:
        check_kind(run_dir, adapter.kind, kind)
    if not inputs:
        return []
    return task.predictions(logits_for(adapter, inputs))


HOW = {"text": "texts: --text \"...\" (repeatable) or --input FILE (a table with a text column)",
       "image": "images: --image PATH (repeatable), --input FOLDER, or --input FILE.csv "
                "--column path (a table of image paths)"}


def check_kind(run_dir: str | Path, model_kind: str, kind: str) -> None:
    """Refuse inputs of the other kind than the model reads, saying what to give instead.

    Raises:
        WarmstartError: naming the run and the inputs this model takes.
    """
    if model_kind != kind:
        article = "an" if model_kind == "image" else "a"
        raise WarmstartError(f"{run_dir} holds {article} {model_kind} model, but the inputs "
                             f"are {kind}s; give it {HOW[model_kind]}")


def model_kind(run_dir: str | Path) -> str | None:
    """"text" or "image": what the run's saved model reads (None: no model there; loading
    it then says why)."""
    run = Path(run_dir)
    for folder in (run, run / "model"):
        if (folder / MODEL_FILE).is_file():
            return read_model_file(folder).get("kind")
    return None


def image_files(paths: list[str | Path], where: str = "--image") -> list[str]:
    """Image files as given, each folder replaced by the images inside it (sorted); each one
    checked to be a readable image.

    Raises:
        WarmstartError: a path that does not exist, a folder without images, a bad image.
    """
    files: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise WarmstartError(f"{where} folder {str(path)!r} holds no images (files "
                                     f"ending in {', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise WarmstartError(f"{where} {str(path)!r} does not exist; check the path")
    check_images(files)
    return files


def read_inputs(run_dir: str | Path, path: str | Path, column: str | None = None,
                pair_column: str | None = None) -> tuple[list[Any], str]:
    """The inputs of `--input` and their kind ("text" or "image"): a folder's images (or one
    image file); for an image model, the image paths in a table's `column` (default `path`;
    relative paths are taken from the table's folder); else the texts of a table, read with
    the run's text (and pair) columns unless given."""
    path, kind = Path(path), model_kind(run_dir)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:  # a folder, or one image
        return image_files([path], "--input"), "image"
    if kind == "image":
        cells = read_column(path, column or "path")
        return image_files([path.parent / cell for cell in cells],
                           f"--input {str(path)!r} column {column or 'path'!r}:"), "image"
    run = Path(run_dir)
    data = read_run_config(run / "config.yaml").data if (run / "config.yaml").is_file() \
        else None
    column = column or (data.text_column if data else "text")
    pair_column = pair_column or (data.text_pair_column if data else None)
    return read_column(path, column, pair_column=pair_column), "text"


def evaluate_file(run_dir: str | Path, path: str | Path,
                  console: Console | None = None) -> dict[str, Any]:
    """Metrics of a finished run on a labelled file (text models) or an image folder with one
    subfolder per class (image models), read with the run's column names; a progress bar on
    `console` when it is a terminal."""
    adapter, task, cfg = load_run(run_dir)
    if not Path(path).exists():
        raise WarmstartError(f"--data {str(path)!r} does not exist; give a labelled table "
                             "file, or for an image model a folder of class subfolders")
    check_kind(run_dir, adapter.kind, "image" if Path(path).is_dir() else "text")
    raw = read_path(Path(path), cfg.data.text_column, cfg.data.label_column, "the data file",
                    pair_column=cfg.data.text_pair_column,
                    blank_labels=task.type == "multilabel")
    coder = LabelCoder(task.type, cfg.data.label_separator)
    unknown = sorted(set(coder.names(raw)) - set(task.label_names))
    if unknown:
        raise WarmstartError(f"labels {unknown[:5]} in {path} are not among the run's labels "
                             f"{task.label_names[:10]}; evaluate only on labels the model was "
                             "trained on")
    examples = coder.examples(raw, task.label_names)
    return task.metrics(logits_for(adapter, examples.inputs, console=console), examples.labels,
                        full=True)
