"""Images for `predict` and `evaluate`: --image files, a folder, a table of paths, an image
folder with class subfolders to evaluate on; inputs of the other kind fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_rows, write_csv
from PIL import Image

from warmstart.cli import main

TINY = ["train.epochs=1", "train.batch_size=8", "optim.lr=1e-2", "--quiet"]


def _folder(root: Path, per: int = 8) -> Path:
    for label, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
        (root / label).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (12, 12), (colour[0] + i, i, colour[2] + i)).save(
                root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    data = _folder(tmp / "pics")
    assert main(["train", *TINY, "model.name=tiny-cnn", f"data.name={data}",
                 f"output.dir={tmp}", "output.name=cnn"]) == 0
    return tmp, data, tmp / "cnn"


def _predictions(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_images_given_as_files_a_folder_or_a_table_of_paths(image_run, capsys):
    tmp, data, run = image_run
    capsys.readouterr()
    red, blue = data / "red" / "0.png", data / "blue" / "1.png"
    assert main(["predict", str(run), "--image", str(red), "--image", str(blue)]) == 0
    one = _predictions(capsys)
    assert [r["input"] for r in one] == [str(red), str(blue)]
    assert all(r["label"] in ("red", "blue") for r in one)
    assert main(["predict", str(run), "--input", str(red)]) == 0  # one image
    alone = _predictions(capsys)[0]["probabilities"]  # batched alone: equal to float error
    assert alone == pytest.approx(one[0]["probabilities"], abs=1e-5)
    assert main(["predict", str(run), "--input", str(data / "red")]) == 0
    folder = _predictions(capsys)
    assert [r["input"] for r in folder] == sorted(str(p) for p in (data / "red").iterdir())
    table = tmp / "paths.csv"  # paths relative to the table's folder
    table.write_text("path\npics/red/0.png\npics/blue/1.png\n")
    assert main(["predict", str(run), "--input", str(table)]) == 0
    from_table = _predictions(capsys)
    assert [r["probabilities"] for r in from_table] == [r["probabilities"] for r in one]
    assert folder[0]["probabilities"] == pytest.approx(one[0]["probabilities"], abs=1e-5)


def test_evaluate_on_an_image_folder_with_class_subfolders(image_run, capsys):
    tmp, data, run = image_run
    out = tmp / "metrics.json"
    assert main(["evaluate", str(run), "--data", str(data), "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert len(metrics["confusion_matrix"]) == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == 16


def _one_line_error(capsys, args: list[str], *words: str) -> None:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_inputs_of_the_other_kind_fail_in_one_line(image_run, tmp_path, capsys):
    _, data, image = image_run
    rows = write_csv(tmp_path / "d.csv", make_rows())
    assert main(["train", *TINY, "model.name=tiny-bert", f"data.name={rows}",
                 f"output.dir={tmp_path}", "output.name=text"]) == 0
    text = tmp_path / "text"
    _one_line_error(capsys, ["predict", str(text), "--image", str(data / "red" / "0.png")],
                    "text model", "--text")
    _one_line_error(capsys, ["predict", str(text), "--input", str(data)], "text model")
    _one_line_error(capsys, ["evaluate", str(text), "--data", str(data)], "text model")
    _one_line_error(capsys, ["predict", str(image), "--text", "a red square"],
                    "image model", "--image")
    _one_line_error(capsys, ["evaluate", str(image), "--data", str(rows)], "image model")
    _one_line_error(capsys, ["predict", str(image), "--input", str(rows)],
                    "no column 'path'", "--column")
    _one_line_error(capsys, ["predict", str(image), "--image", str(tmp_path / "nope.png")],
                    "nope.png", "does not exist")
    (tmp_path / "empty.png").write_bytes(b"")
    _one_line_error(capsys, ["predict", str(image), "--image", str(tmp_path / "empty.png")],
                    "empty.png", "empty")


def test_evaluate_shows_progress_on_a_terminal_only(image_run):
    import io

    from rich.console import Console

    from warmstart.ship.predict import evaluate_file

    _, data, run = image_run
    shown = {}
    for name, console in (("terminal", Console(file=io.StringIO(), force_terminal=True)),
                          ("pipe", Console(file=io.StringIO(), force_terminal=False)),
                          ("quiet", Console(file=io.StringIO(), force_terminal=True,
                                            quiet=True))):
        evaluate_file(run, data, console)
        shown[name] = console.file.getvalue()
    assert "evaluating" in shown["terminal"] and "16/16" in shown["terminal"]
    assert shown["pipe"] == shown["quiet"] == ""
