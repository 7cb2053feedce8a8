"""ONNX export: verified against PyTorch, predicts from its folder alone, int8 reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_rows, write_csv

from warmstart.cli import main
from warmstart.errors import WarmstartError
from warmstart.ship import export as export_module
from warmstart.ship.export import export
from warmstart.ship.predict import predict

TEXTS = ["match goal team coach", "bread soup recipe", "software chip cloud"]


def _train(tmp_path, name, *extra):
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    assert main(["train", "model.name=tiny-bert", f"data.name={data}", "train.epochs=1",
                 f"output.dir={tmp_path}", f"output.name={name}", "log.quiet=true",
                 *extra]) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("onnx"), "full")


def _probabilities(rows):
    return np.array([[r["probabilities"][k] for k in sorted(r["probabilities"])] for r in rows])


def test_onnx_export_matches_torch_and_predicts_from_its_folder(run, tmp_path):
    out = export(run, tmp_path / "onnx", fmt="onnx")
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    report = json.loads((out / "export.json").read_text())
    assert report["max_abs_diff"] <= 1e-4 and report["checked"] > 0
    from_run, from_onnx = predict(run, TEXTS), predict(out, TEXTS)
    assert [r["label"] for r in from_onnx] == [r["label"] for r in from_run]
    assert np.abs(_probabilities(from_onnx) - _probabilities(from_run)).max() < 1e-4
    # The folder alone: no run config next to it, no base model needed.
    assert not (out.parent / "config.yaml").exists()


def test_int8_reports_its_accuracy_change_and_speed(run, tmp_path):
    assert main(["export", str(run), str(tmp_path / "q"), "--format", "onnx",
                 "--quantize", "int8"]) == 0
    report = json.loads((tmp_path / "q" / "export.json").read_text())
    assert report["quantized"] and report["metric"] == "accuracy"
    assert 0 <= report["accuracy_int8"] <= 1 and report["seconds_int8"] > 0
    rows = predict(tmp_path / "q", TEXTS)  # the int8 model is the one the folder serves
    assert len(rows) == 3 and set(rows[0]) == {"label", "probabilities"}


def test_lora_is_merged_before_export(tmp_path):
    run = _train(tmp_path, "lora", "strategy.name=lora")
    out = export(run, tmp_path / "onnx", fmt="onnx")
    assert np.abs(_probabilities(predict(out, TEXTS)) - _probabilities(predict(run, TEXTS))
                  ).max() < 1e-4


def test_a_failed_verification_fails_the_export_and_leaves_nothing(run, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(export_module, "ONNX_TOLERANCE", -1.0)
    with pytest.raises(WarmstartError, match="does not match PyTorch"):
        export(run, tmp_path / "bad", fmt="onnx")
    assert not (tmp_path / "bad").exists()


def test_quantize_needs_onnx(run, tmp_path):
    with pytest.raises(WarmstartError, match="--quantize int8 goes with --format onnx"):
        export(run, tmp_path / "x", quantize="int8")


@pytest.mark.parametrize("model", ["tiny-cnn", "tiny-vit"])
def test_image_models_export_with_their_preprocessing(tmp_path, model):
    from sklearn.datasets import load_digits

    assert main(["train", f"model.name={model}", "data.name=digits", "data.limit=60",
                 "train.epochs=1", f"output.dir={tmp_path}", "output.name=r",
                 "log.quiet=true"]) == 0
    out = export(tmp_path / "r", tmp_path / "onnx", fmt="onnx")
    meta = json.loads((out / "warmstart_model.json").read_text())
    assert meta["kind"] == "image" and {"image_size", "mean", "std"} <= set(meta)
    images = [(load_digits().images[i] * 16).astype(np.uint8) for i in range(3)]
    assert np.abs(_probabilities(predict(out, images)) -
                  _probabilities(predict(tmp_path / "r", images))).max() < 1e-4
