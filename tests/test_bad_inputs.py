"""The bad-input corpus: each mistake a user can make with their files ends in exit status 2,
one line naming the file (and row or key) and what to do, and no directory that looks like a
finished run. Plus property tests: no table or config makes the readers raise anything else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_rows, write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warmstart.cli import main
from warmstart.config import build_config, load_config, read_tree, with_overrides
from warmstart.data.readers import read_table
from warmstart.errors import WarmstartError

TINY = ["model.name=tiny-bert", "train.epochs=1", "train.batch_size=8", "optim.lr=1e-3"]
CSV_OK = "".join(f'"{t}",{y}\n' for t, y in make_rows())


def _images(root: Path, broken: bytes) -> Path:
    from PIL import Image

    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / label / f"{i}.png")
    (root / "cat" / "bad.png").write_bytes(broken)
    return root


def _truncated_png(root: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(root / "whole.png")
    return (root / "whole.png").read_bytes()[:40]


# name -> (files to write under tmp, train arguments, words the error must hold)
CORPUS = {
    "malformed quoting": (
        {"d.csv": 'text,label\n"an opened quote never closed,sport\n' + CSV_OK},
        ["data.name={tmp}/d.csv"], ["d.csv", "line 3", "quot"]),
    "duplicated columns": (
        {"d.csv": "text,label,label\n" + CSV_OK.replace("\n", ",x\n")},
        ["data.name={tmp}/d.csv"], ["d.csv", "'label'", "rename"]),
    "mixed encodings": (
        {"d.csv": ("text,label\n" + CSV_OK).encode() + "caf\xe9,food\n".encode("latin-1")},
        ["data.name={tmp}/d.csv"], ["d.csv", "UTF-8"]),
    "text column is the label column": (
        {"d.csv": "text,label\n" + CSV_OK},
        ["data.name={tmp}/d.csv", "data.text_column=label"], ["data.text_column", "answer"]),
    "zero-byte image": (
        {"imgs": lambda root: _images(root, b"")},
        ["data.name={tmp}/imgs", "model.name=tiny-cnn"], ["bad.png"]),
    "truncated image": (
        {"imgs": lambda root: _images(root, _truncated_png(root.parent))},
        ["data.name={tmp}/imgs", "model.name=tiny-cnn"], ["bad.png"]),
    "model directory missing its weights": (
        {"model": lambda root: _weightless_model(root)},
        ["model.name={tmp}/model", "data.name={tmp}/d.csv"], ["model", "model.safetensors"]),
    "a label column of NaN only": (
        {"d.csv": "text,label\n" + "".join(f'"{t}",NaN\n' for t, _ in make_rows())},
        ["data.name={tmp}/d.csv"], ["d.csv", "label"]),
}


def _weightless_model(root: Path) -> None:
    """A saved model folder (config, tokenizer) without its weights file."""
    write_csv(root.parent / "d.csv", make_rows())
    assert main(["train", "--quiet", *TINY, f"data.name={root.parent / 'd.csv'}",
                 f"output.dir={root.parent / 'made'}", "output.name=m"]) == 0
    shutil.copytree(root.parent / "made" / "m" / "model", root)
    for weights in root.glob("*.safetensors"):
        weights.unlink()


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, case):
    files, args, words = CORPUS[case]
    for name, content in files.items():
        if callable(content):
            content(tmp_path / name)
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content, encoding="utf-8")
    capsys.readouterr()
    out = tmp_path / "runs"
    code = main(["train", "--quiet", *TINY, f"output.dir={out}", "output.name=r",
                 *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("warmstart: error: ") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not (out / "r" / "summary.json").exists()  # nothing that looks finished
    assert not (out / "r").exists()  # refused before the run directory was made


@pytest.mark.parametrize("header, sep", [("text,label", ","), ("text;label", ";"),
                                         ("text\tlabel", "\t")])
def test_csv_delimiters_and_a_bom_are_read(tmp_path, header, sep):
    path = tmp_path / "d.csv"
    body = "".join(f'"{t}"{sep}{y}\n' for t, y in make_rows())
    path.write_bytes(b"\xef\xbb\xbf" + (header + "\n" + body).encode())  # as Excel writes it
    table = read_table(path, "text", "label")
    texts, labels, dropped = table.inputs, table.labels, table.dropped
    assert len(texts) == 36 and set(labels) == {"sport", "tech", "food"} and dropped == 0


def test_label_names_with_path_separators_stay_labels(tmp_path, capsys):
    rows = [(t, {"sport": "a/b", "tech": "..\\c", "food": "../../etc"}[y]) for t, y in make_rows()]
    data = write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "runs"
    assert main(["train", "--quiet", *TINY, f"data.name={data}", f"output.dir={out}",
                 "output.name=r"]) == 0
    from warmstart.summary import read_summary

    assert sorted(read_summary(out / "r").labels) == sorted(["a/b", "..\\c", "../../etc"])
    outside = {p for p in tmp_path.rglob("*")} - {p for p in out.rglob("*")} - {data, out}
    assert outside == set()  # no file was written outside the run directory by a label's name


def _stopped_run(tmp_path: Path) -> Path:
    data = write_csv(tmp_path / "d.csv", make_rows())
    assert main(["train", "--quiet", *TINY, f"data.name={data}", f"output.dir={tmp_path}",
                 "output.name=r"]) == 0
    (tmp_path / "r" / "summary.json").unlink()  # as a run killed after its last checkpoint
    return tmp_path / "r"


class Boom:
    """A pickled object: loading it with weights_only=False would run code."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickled_or_foreign_checkpoint_is_refused_with_a_how_to(tmp_path, capsys):
    run = _stopped_run(tmp_path)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = step / "state.pt"
    kept = state.read_bytes()
    torch.save({"loop": Boom()}, state)
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(step) in err and "safetensors" in err and "code" in err
    state.write_bytes(kept)
    # The weights of another model (a bigger head) in the checkpoint:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(step / "model.safetensors"))
    name = sorted(weights)[-1]
    weights[name] = torch.zeros(7, *weights[name].shape[1:])
    save_file(weights, str(step / "model.safetensors"))
    assert main(["train", "--quiet", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another model" in err and repr(name) in err


# --------------------------------------------------------------------------- properties

cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json"]))
def test_any_bytes_read_as_a_table_or_a_warmstart_error(tmp_path, raw, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(raw)
    try:
        table = read_table(path, "text", "label")
        texts, labels = table.inputs, table.labels
    except WarmstartError as e:
        assert "\n" not in str(e)
        return
    assert texts and len(texts) == len(labels) and all(isinstance(x, str) for x in labels)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cells, cells), max_size=8),
       sep=st.sampled_from([",", ";", "\t"]), quote=st.booleans())
def test_any_csv_of_text_reads_or_fails_in_one_line(tmp_path, rows, sep, quote):
    def cell(x: str) -> str:
        return '"' + x.replace('"', '""') + '"' if quote else x

    path = tmp_path / "t.csv"
    path.write_text(f"text{sep}label\n" + "".join(
        f"{cell(a)}{sep}{cell(b)}\n" for a, b in rows), encoding="utf-8")
    try:
        table = read_table(path, "text", "label")
        texts, labels = table.inputs, table.labels
    except WarmstartError as e:
        assert "\n" not in str(e)
        return
    # Unquoted, a cell holding a line break is two rows of the file (hypothesis found
    # [("0", "0\n0,0")]): only the file's lines bound the rows then.
    bound = len(rows) if quote else len(path.read_text(encoding="utf-8").splitlines()) - 1
    assert len(texts) == len(labels) <= bound


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | cells,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cells, inner, max_size=3),
    max_leaves=6)
KEYS = ["model.name", "model.max_length", "optim.lr", "optim.betas", "train.epochs",
        "train.class_weights", "data.val_fraction", "strategy.name", "strategy.k", "log.to",
        "train", "optim", "nonsense.key"]


@settings(max_examples=300, deadline=None)
@given(tree=st.dictionaries(st.sampled_from(KEYS), yaml_values, max_size=4))
def test_any_config_tree_builds_or_fails_in_one_line(tree):
    try:
        build_config(with_overrides({}, [f"{k}={v}" for k, v in tree.items()]))
    except WarmstartError as e:
        assert "\n" not in str(e)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_yaml_file_loads_or_fails_in_one_line(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
        read_tree(path)
    except WarmstartError as e:
        assert "\n" not in str(e)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | cells,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(cells, inner, max_size=2),
    max_leaves=4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.sampled_from(["text", "label", "x"]), json_values,
                                        max_size=3), max_size=6),
       lines=st.booleans())
def test_any_json_records_read_or_fail_in_one_line(tmp_path, records, lines):
    import json

    path = tmp_path / ("t.jsonl" if lines else "t.json")
    text = ("".join(json.dumps(r) + "\n" for r in records) if lines else json.dumps(records))
    path.write_text(text, encoding="utf-8")
    try:
        table = read_table(path, "text", "label")
        texts, labels = table.inputs, table.labels
    except WarmstartError as e:
        assert "\n" not in str(e)
        return
    assert len(texts) == len(labels) and all(t and lab for t, lab in zip(texts, labels))
