"""Use a finished run: predict labels for new inputs, or evaluate on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.config import RunConfig, read_run_config
from warmstart.data.batches import Batches
from warmstart.data.readers import read_table
from warmstart.errors import WarmstartError
from warmstart.models import load_adapter
from warmstart.models.base import MODEL_FILE, Adapter
from warmstart.training.checkpoint import Checkpointer, is_finished
from warmstart.training.evaluate import metrics_from_logits, predict_logits


def load_run(run_dir: str | Path) -> tuple[Adapter, list[str], RunConfig]:
    """The fine-tuned model of a finished run, its label names and its config."""
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
            return adapter, labels, RunConfig()
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
    return adapter, labels, cfg


def logits_for(adapter: Adapter, inputs: list[Any], batch_size: int = 64) -> np.ndarray:
    """Logits for raw inputs (texts or images), in input order."""
    encoded = adapter.encode(inputs)
    lengths = adapter.lengths(encoded) if adapter.lengths is not None else None
    batches = Batches(encoded, np.zeros(len(encoded), dtype=np.int64), adapter.collate,
                      batch_size, shuffle=False, lengths=lengths)
    device = next(adapter.module.parameters()).device
    logits, _ = predict_logits(adapter.module, batches, device)
    return logits


def predict(run_dir: str | Path, inputs: list[Any]) -> list[dict[str, Any]]:
    """For each input: the predicted label and the probability of every label."""
    adapter, labels, _ = load_run(run_dir)
    if not inputs:
        return []
    probs = torch.softmax(torch.from_numpy(logits_for(adapter, inputs)), dim=1).numpy()
    return [
        {"label": labels[int(row.argmax())],
         "probabilities": {name: float(p) for name, p in zip(labels, row)}}
        for row in probs
    ]


def evaluate_file(run_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """Metrics of a finished run on a labelled file read with the run's column names."""
    adapter, labels, cfg = load_run(run_dir)
    inputs, raw_labels, _ = read_table(path, cfg.data.text_column, cfg.data.label_column)
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(raw_labels) - set(index))
    if unknown:
        raise WarmstartError(f"labels {unknown[:5]} in {path} are not among the run's labels "
                             f"{labels[:10]}; evaluate only on classes the model was trained on")
    y = np.array([index[v] for v in raw_labels], dtype=np.int64)
    return metrics_from_logits(logits_for(adapter, inputs), y, labels, full=True)
