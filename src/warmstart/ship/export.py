"""`warmstart export`: a finished run's model as a folder of its own, to ship or serve.

Without `merge` the run's `model/` folder is copied as it is; for a lora/ia3 run that is
peft's adapter layout (`adapter_config.json`, `adapter_model.safetensors` with the head),
small, which needs the base model to load. With `merge` the adapters are folded into the base
weights (peft's `merge_and_unload`) and the result is saved the way the base model saves
itself: a Hugging Face `save_pretrained` folder with the tokenizer and label map, or
safetensors with `warmstart_model.json` for the CNNs. Either folder loads with
`warmstart.models.load_adapter`; a merged one needs neither peft nor the base model.

`fmt="onnx"` writes the network through torch's ONNX exporter (adapters merged first) with
dynamic batch and sequence axes, beside the tokenizer or the image preprocessing and the task
(`models/onnx.py` loads it through onnxruntime). The export is verified on real inputs of the
run's own data: the ONNX logits must match PyTorch's to `ONNX_TOLERANCE`, or the export fails
and nothing is left behind. `quantize="int8"` adds onnxruntime's dynamic int8 quantization
and reports its accuracy change on the run's test split and its speed-up.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.config import read_run_config
from warmstart.data import load_task
from warmstart.errors import WarmstartError
from warmstart.files import atomic_dir, commit_dir
from warmstart.models import load_adapter
from warmstart.models.base import (
    MODEL_FILE,
    Adapter,
    logits_of,
    read_model_file,
    write_model_file,
)
from warmstart.models.ensemble import ENSEMBLE_FILE, read_manifest
from warmstart.models.onnx import INT8_FILE, ONNX_FILE, load_onnx, require_onnxruntime
from warmstart.models.peft import merged
from warmstart.models.pooling import PAIR_SUFFIX
from warmstart.ship.predict import logits_for
from warmstart.tasks import task_from_dict
from warmstart.training.checkpoint import is_finished

ONNX_TOLERANCE = 1e-4  # max abs logit difference between ONNX and PyTorch (fp32)
CHECK_EXAMPLES = 64  # real inputs the export is verified on
REPORT_FILE = "export.json"


@dataclass
class ExportReport:
    """What an ONNX export measured (written to `export.json` in the folder)."""

    max_abs_diff: float
    checked: int
    quantized: bool = False
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    metric: str = ""
    seconds_fp32: float | None = None
    seconds_int8: float | None = None

    def describe(self) -> str:
        text = (f"verified on {self.checked} inputs of the run's data: max |onnx - torch| "
                f"= {self.max_abs_diff:.2e}")
        if self.quantized and self.accuracy_fp32 is not None:
            speed = (self.seconds_fp32 or 0) / max(self.seconds_int8 or 1e-9, 1e-9)
            text += (f"; int8: test {self.metric} {self.accuracy_int8:.4f} vs fp32 "
                     f"{self.accuracy_fp32:.4f} ({self.accuracy_int8 - self.accuracy_fp32:+.4f}),"
                     f" {speed:.2f}x the fp32 speed")
        return text


def export(run_dir: str | Path, out_dir: str | Path, merge: bool = False, fmt: str = "hf",
           quantize: str | None = None, opset: int = 17) -> Path:
    """Write the model of the finished run `run_dir` to the new folder `out_dir`.

    Args:
        run_dir: a run directory with a saved model (`output.save_model=true`).
        out_dir: where to write; it must not exist yet, or be empty.
        merge: fold lora/ia3 adapters into the base weights and write a plain model.
        fmt: `hf` (the saved layout) or `onnx`.
        quantize: with onnx, `int8` adds a dynamically quantized model.
        opset: the ONNX opset.

    Returns:
        The folder written.

    Raises:
        WarmstartError: the run is unfinished or has no model, `out_dir` holds files, or
            `merge` was asked of a run that trained no adapters.
    """
    run, out = Path(run_dir), Path(out_dir)
    if (run / ENSEMBLE_FILE).is_file():
        return export_ensemble(run, out, merge, fmt, quantize, opset)
    model_dir = run / "model"
    if not is_finished(run) and (run / "checkpoints").is_dir():
        raise WarmstartError(f"{run} holds an unfinished run (it was stopped); finish it "
                             f"with `warmstart train --resume {run}`, then export it")
    if not is_finished(run) or not model_dir.is_dir():
        raise WarmstartError(f"{str(run)!r} holds no finished run with a saved model; pass "
                             "a run directory trained with output.save_model=true")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WarmstartError(f"{str(out)!r} already exists and is not an empty folder; "
                             "choose a new output folder")
    meta = read_model_file(model_dir)
    if fmt not in ("hf", "onnx"):
        raise WarmstartError(f"--format {fmt!r}: use hf or onnx")
    if quantize not in (None, "int8") or (quantize and fmt != "onnx"):
        raise WarmstartError("--quantize int8 goes with --format onnx (the only quantization "
                             "offered)")
    if fmt == "onnx":
        require_onnxruntime("--format onnx")
    elif merge and meta.get("source") != "peft":
        raise WarmstartError(f"{str(run)!r} trained no adapters (its model is already a plain "
                             "model): export it without --merge")
    try:
        tmp = atomic_dir(out)  # written beside `out`, renamed into place when complete
    except OSError as e:
        raise WarmstartError(f"cannot write export folder {str(out)!r}: {e.strerror or e}; "
                             "choose a writable place") from None
    try:
        if fmt == "onnx":
            report = write_onnx(run, model_dir, meta, tmp, quantize, opset)
            print(report.describe())
        elif merge:
            merged(model_dir, meta).save(tmp, list(meta["labels"]))
        else:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)
    return out


def export_ensemble(run: Path, out: Path, merge: bool, fmt: str, quantize: str | None,
                    opset: int) -> Path:
    """An ensemble exported: each member exported (as `export` does a run) to its place
    under `members/`, beside the ensemble's manifest, model file, config and summary, so the
    folder loads as the same ensemble. With `merge`, the members that trained adapters are
    merged."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WarmstartError(f"{str(out)!r} already exists and is not an empty folder; "
                             "choose a new output folder")
    tmp = atomic_dir(out)
    try:
        for entry in read_manifest(run)["members"]:
            member = run / entry["path"]
            peft = read_model_file(member / "model").get("source") == "peft"
            export(member, tmp / entry["path"], merge=merge and peft, fmt=fmt,
                   quantize=quantize, opset=opset)
        for name in (ENSEMBLE_FILE, MODEL_FILE, "config.yaml", "summary.json"):
            if (run / name).is_file():
                shutil.copyfile(run / name, tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)
    return out


def write_onnx(run: Path, model_dir: Path, meta: dict[str, Any], out: Path,
               quantize: str | None, opset: int) -> ExportReport:
    """Export the run's model to ONNX in `out`, verify it, quantize it if asked."""
    adapter = merged(model_dir, meta) if meta.get("source") == "peft" else \
        load_adapter(model_dir)[0]
    adapter.module.eval()
    task = task_from_dict(meta.get("task"), list(meta["labels"]))
    inputs, labels = _real_examples(run)
    if not inputs:
        raise WarmstartError(f"cannot verify the ONNX export: the data of {run} cannot be read "
                             "(moved?); restore it at the path in its config.yaml")
    batch = adapter.collate(adapter.encode(inputs[:CHECK_EXAMPLES]))
    names = list(batch)
    wrapper = _Positional(adapter.module, names).eval()
    # A bi-encoder's second text (`*_b` inputs) has a sequence length of its own.
    dynamic = {k: ({0: "batch", 1: "sequence_b" if k.endswith(PAIR_SUFFIX) else "sequence"}
                   if batch[k].dim() == 2 else {0: "batch"}) for k in names}
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, tuple(batch[k] for k in names), str(out / ONNX_FILE),
                          input_names=names, output_names=["logits"],
                          dynamic_axes={**dynamic, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
        # Checked on the traced batch and on a smaller one of other lengths: a trace that
        # had frozen a batch or sequence size would fail the second.
        other = adapter.collate(adapter.encode(inputs[-7:]))
        checks = [(b, wrapper(*[b[k] for k in names]).float().numpy()) for b in (batch, other)]
    saved = {**{k: v for k, v in meta.items() if k in ("name", "kind", "labels", "task",
                                                      "max_length", "pair_encoding")},
             "source": "onnx", "opset": opset, "int8": quantize == "int8",
             "pairs": isinstance(inputs[0], tuple)}
    if adapter.kind == "text":
        adapter.extra["tokenizer"].save_pretrained(out)
        saved["max_length"] = adapter.extra["max_length"]
    else:
        saved |= {k: adapter.extra[k] for k in ("image_size", "mean", "std")}
    write_model_file(out, saved)
    fp32 = load_onnx(out, saved, int8=False)
    diff = max(float(np.abs(fp32.module(**b).numpy() - ref).max()) for b, ref in checks)
    report = ExportReport(max_abs_diff=diff, checked=sum(len(ref) for _, ref in checks))
    if not diff <= ONNX_TOLERANCE:
        raise WarmstartError(f"the ONNX export of {run} does not match PyTorch: max |diff| "
                             f"{diff:.2e} > {ONNX_TOLERANCE:g}; nothing was written (try "
                             "another --opset)")
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(out / ONNX_FILE), str(out / INT8_FILE), weight_type=QuantType.QInt8)
        int8 = load_onnx(out, saved, int8=True)
        report.quantized, report.metric = True, task.natural_metric
        report.accuracy_fp32, report.seconds_fp32 = _score(fp32, task, inputs, labels)
        report.accuracy_int8, report.seconds_int8 = _score(int8, task, inputs, labels)
    (out / REPORT_FILE).write_text(json.dumps(report.__dict__, indent=2) + "\n",
                                   encoding="utf-8")
    return report


class _Positional(torch.nn.Module):
    """The model called with positional tensors (the ONNX exporter's inputs), giving logits."""

    def __init__(self, module: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return logits_of(self.module(**dict(zip(self.names, tensors))))


def _real_examples(run: Path) -> tuple[list[Any], np.ndarray]:
    """The run's test examples (validation without a test split), read from its config."""
    try:
        cfg = read_run_config(run / "config.yaml")
        seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.train.seed
        data = load_task(cfg.data, seed, cfg.task)
    except WarmstartError:
        return [], np.zeros(0)
    split = data.test if len(data.test) else data.validation
    return list(split.inputs), split.labels


def _score(adapter: Adapter, task: Any, inputs: list[Any], labels: np.ndarray
           ) -> tuple[float, float]:
    """The task's headline metric of `adapter` on the examples, and the seconds it took."""
    started = time.perf_counter()
    logits = logits_for(adapter, inputs, batch_size=32)
    seconds = time.perf_counter() - started
    return float(task.metrics(logits, labels)[task.natural_metric]), seconds
