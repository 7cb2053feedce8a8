"""Use a finished run: predict for new inputs, or evaluate on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.config import RunConfig, read_run_config
from warmstart.data import LabelCoder
from warmstart.data.batches import Batches
from warmstart.data.readers import read_column, read_path
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
        else:  # exported: no run config; the columns are the defaults
            adapter, labels = load_adapter(run)
            adapter.module.eval()
            return adapter, task_from_dict(read_model_file(run).get("task"), labels), RunConfig()
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


def logits_for(adapter: Adapter, inputs: list[Any], batch_size: int = 64) -> np.ndarray:
    """Logits for raw inputs (texts, (text, pair) tuples or images), in input order."""
    encoded = adapter.encode(inputs)
    lengths = adapter.lengths(encoded) if adapter.lengths is not None else None
    batches = Batches(encoded, np.zeros(len(encoded), dtype=np.int64), adapter.collate,
                      batch_size, shuffle=False, lengths=lengths)
    # An exported ONNX model has no parameters: it runs on the CPU.
    device = next(adapter.module.parameters(), torch.empty(0)).device
    logits, _ = predict_logits(adapter.module, batches, device)
    return logits


def predict(run_dir: str | Path, inputs: list[Any]) -> list[dict[str, Any]]:
    """For each input, what the run's task predicts: the label and every label's probability
    (classification), the labels over their thresholds and every probability (multilabel),
    or the score (regression)."""
    adapter, task, _ = load_run(run_dir)
    if not inputs:
        return []
    return task.predictions(logits_for(adapter, inputs))


def read_inputs(run_dir: str | Path, path: str | Path, column: str | None = None,
                pair_column: str | None = None) -> list[Any]:
    """The inputs in a table file, read with the run's text (and pair) columns unless given."""
    run = Path(run_dir)
    data = read_run_config(run / "config.yaml").data if (run / "config.yaml").is_file() \
        else None
    column = column or (data.text_column if data else "text")
    pair_column = pair_column or (data.text_pair_column if data else None)
    return read_column(path, column, pair_column=pair_column)


def evaluate_file(run_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """Metrics of a finished run on a labelled file read with the run's column names."""
    adapter, task, cfg = load_run(run_dir)
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
    return task.metrics(logits_for(adapter, examples.inputs), examples.labels, full=True)
