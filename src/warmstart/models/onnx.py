"""Exported ONNX models as adapters: onnxruntime runs the network, warmstart the rest.

`warmstart export RUN OUT --format onnx` (`ship/export.py`) writes `model.onnx` (and
`model.int8.onnx` with `--quantize int8`), the tokenizer or the image preprocessing, and a
`warmstart_model.json` with source `onnx`. Loading that folder gives an `Adapter` whose module
calls onnxruntime, so `predict`, `evaluate` and serving work on it as on any saved model, and
need neither the base model nor the training run. onnxruntime is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models.base import LOADERS, Adapter
from warmstart.models.images import image_collate, keep_inputs

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def require_onnxruntime(what: str) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise WarmstartError(f"{what} needs onnxruntime: pip install 'warmstart[onnx]'") from None
    return onnxruntime


class OrtModule(nn.Module):
    """`module(**batch)` -> logits, computed by an onnxruntime session (CPU)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime("an exported ONNX model")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        feed = {k: batch[k].cpu().numpy() for k in self.names}
        return torch.from_numpy(np.asarray(self.session.run(None, feed)[0]))


@LOADERS.register("onnx", "ONNX models written by `warmstart export --format onnx`")
def load_onnx(directory: Path, meta: dict[str, Any], int8: bool | None = None) -> Adapter:
    """The adapter of an exported folder; `int8` picks the quantized model (default: it when
    the export made one)."""
    int8 = bool(meta.get("int8")) if int8 is None else int8
    module = OrtModule(directory / (INT8_FILE if int8 else ONNX_FILE))
    extra: dict[str, Any] = {"onnx": True}
    lengths = None
    if meta["kind"] == "text":
        from transformers import AutoTokenizer

        from warmstart.models.hf_text import text_io

        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        encode, lengths, collate = text_io(tokenizer, int(meta["max_length"]),
                                           meta.get("pair_encoding", "cross"))
        extra |= {"tokenizer": tokenizer, "max_length": int(meta["max_length"])}
    else:
        encode = keep_inputs
        collate = image_collate(int(meta["image_size"]), meta["mean"], meta["std"])
        extra |= {k: meta[k] for k in ("image_size", "mean", "std")}

    def save(out: Path, label_names: list[str]) -> None:
        raise WarmstartError("an exported ONNX model is already shipped; copy its folder")

    return Adapter(name=str(meta.get("name", directory.name)), kind=meta["kind"],
                   module=module, groups=[], head=module, default_lr=0.0, encode=encode,
                   collate=collate, save=save, lengths=lengths, extra=extra)
