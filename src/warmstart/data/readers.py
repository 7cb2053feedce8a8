"""Read labelled examples from the user's files: tables (CSV/TSV/JSONL/Parquet) and image folders.

Every reader returns a `RawSet` whose labels are strings, whatever type the file stored them
as, so that "3" from a CSV and 3 from a Parquet file name the same class. Everything a user can
get wrong (missing file, wrong encoding, missing column, no rows) is a one-line WarmstartError
naming the file and, where it helps, the config key to change.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from warmstart.data.base import RawSet
from warmstart.errors import WarmstartError, did_you_mean

TABLE_FORMATS = {
    ".csv": "CSV",
    ".tsv": "TSV",
    ".tab": "TSV",
    ".jsonl": "JSON lines",
    ".json": "JSON",
    ".parquet": "Parquet",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_path(path: str | Path, text_column: str, label_column: str, key: str, *,
              pair_column: str | None = None, blank_labels: bool = False) -> RawSet:
    """Read a table file or an image folder, whichever `path` is.

    Args:
        path: a .csv/.tsv/.tab/.jsonl/.json/.parquet file, or a folder of class subfolders.
        text_column: column holding the input text (tables only).
        label_column: column holding the label (tables only).
        key: the config key that named this path (e.g. "data.validation"), for messages.
        pair_column: column holding each example's second text (`data.text_pair_column`);
            the inputs are then (text, pair) tuples.
        blank_labels: keep rows whose label is blank (as ""): a multilabel example with no
            label; the caller decides what they mean.

    Returns:
        The examples, labels as strings; kind "text" for tables and "image" for folders.

    Raises:
        WarmstartError: the path does not exist or cannot be read as labelled examples.
    """
    path = Path(path)
    if not path.exists():
        raise WarmstartError(f"data file {str(path)!r} ({key}) does not exist; check the path")
    if path.is_dir():
        if pair_column:
            raise WarmstartError(f"data.text_pair_column is set but {key} {str(path)!r} is an "
                                 "image folder; text pairs come from a table file")
        inputs, labels = read_image_folder(path)
        return RawSet("image", inputs, labels, str(path))
    table = read_table(path, text_column, label_column, pair_column=pair_column,
                       blank_labels=blank_labels)
    source = str(path)
    if table.dropped:
        # Not printed here (this layer stays silent); the source ends up in logs and the card.
        what = "text" if blank_labels else "text or label"
        source += (f" ({table.dropped} rows without {what} dropped; NaN, NA, null and the "
                   "other pandas missing-value strings count as no label)")
    return RawSet("text", table.inputs, table.labels, source, rows=table.rows)


@dataclass
class Table:
    """The examples of a table file: inputs (texts, or (text, pair) tuples), labels as
    stripped strings, each example's row number in the file (the header is row 1, as a
    spreadsheet shows it) and how many rows were dropped."""

    inputs: list[Any]
    labels: list[str]
    rows: list[int]
    dropped: int


def read_table(path: str | Path, text_column: str, label_column: str, *,
               pair_column: str | None = None, blank_labels: bool = False) -> Table:
    """Read the text (and pair) and label columns of a table file, chosen by its extension.

    Rows whose text is blank are dropped, and those whose label is blank unless
    `blank_labels`. A blank pair text is an error naming the row: half a pair is not an
    example.

    Args:
        path: a .csv, .tsv/.tab, .jsonl/.json (JSON lines, or one array of records) or
            .parquet file, UTF-8 encoded where it is text.
        text_column: column holding the input text (`data.text_column`).
        label_column: column holding the label (`data.label_column`).
        pair_column: column holding the second text of each pair (`data.text_pair_column`).
        blank_labels: keep rows with a blank label (their label is "").

    Raises:
        WarmstartError: unknown extension, unreadable file, missing column, a blank pair text,
            or no usable rows.
    """
    path = Path(path)
    name = repr(str(path))
    df = _read_frame(path)
    _require_column(df, path, text_column, "data.text_column")
    _require_column(df, path, label_column, "data.label_column")
    if pair_column:
        _require_column(df, path, pair_column, "data.text_pair_column")
    if len(df) == 0:
        raise WarmstartError(f"data file {name} has a header but no rows; add examples to it")
    texts = [_as_str(v) for v in df[text_column].tolist()]
    labels = [(_missing_as_none(_as_str(v)) or "").strip() for v in df[label_column].tolist()]
    pairs = [_as_str(v) for v in df[pair_column].tolist()] if pair_column else None
    # Labels are stripped so "sport " and "sport" are one class; texts are kept as written.
    keep = [i for i, (t, lab) in enumerate(zip(texts, labels, strict=True))
            if t and (lab or blank_labels)]
    if not keep:
        raise WarmstartError(
            f"data file {name} has {len(df)} rows but none with both a text ({text_column!r}) "
            f"and a label ({label_column!r}); fill those columns in"
        )
    inputs: list[Any] = [texts[i] for i in keep]
    if pairs is not None:
        blank = next((i for i in keep if not pairs[i]), None)
        if blank is not None:
            raise WarmstartError(
                f"data file {name} row {blank + 2}: the pair column {pair_column!r} "
                "(data.text_pair_column) is empty; fill it in or remove the row")
        inputs = [(texts[i], pairs[i]) for i in keep]
    return Table(inputs, [labels[i] for i in keep], [i + 2 for i in keep], len(df) - len(keep))


# What pandas reads as missing (`pandas.read_csv`'s default na_values). A label cell holding
# one of these is missing in every format: a CSV's "NaN" and a Parquet null alike drop the row.
MISSING_LABELS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _missing_as_none(label: str | None) -> str | None:
    return None if label is None or label.strip() in MISSING_LABELS else label


def read_column(path: str | Path, column: str, key: str = "--column", *,
                pair_column: str | None = None) -> list[Any]:
    """The non-blank values of one column (the inputs to predict), in file order; with
    `pair_column`, (text, pair) tuples, a blank pair being an error naming its row."""
    path = Path(path)
    df = _read_frame(path)
    _require_column(df, path, column, key)
    texts = [_as_str(v) for v in df[column].tolist()]
    if not pair_column:
        return [v for v in texts if v]
    _require_column(df, path, pair_column, "--pair-column")
    pairs = [_as_str(v) for v in df[pair_column].tolist()]
    out = []
    for i, (text, pair) in enumerate(zip(texts, pairs)):
        if not text:
            continue
        if not pair:
            raise WarmstartError(f"data file {str(path)!r} row {i + 2}: the pair column "
                                 f"{pair_column!r} is empty; fill it in or remove the row")
        out.append((text, pair))
    return out


def _require_column(df: pd.DataFrame, path: Path, column: str, key: str) -> None:
    """A one-line error naming the file, the missing column, the columns it has and `key`."""
    if column not in df.columns:
        have = [str(c) for c in df.columns]
        raise WarmstartError(
            f"data file {str(path)!r} has no column {column!r} (its columns: "
            f"{', '.join(map(repr, have)) or 'none'}){did_you_mean(column, have)}; "
            f"set {key} to the right one"
        )


def read_image_folder(path: str | Path) -> tuple[list[str], list[str]]:
    """List the images of a folder holding one subfolder per class.

    Images are searched for anywhere inside each class subfolder; they are returned as paths
    (str) and loaded later by the model's preprocessing, so a large folder costs no memory here.
    Subfolders without images (e.g. `.ipynb_checkpoints`) are ignored.

    Args:
        path: the folder, e.g. `pets/` holding `pets/cat/1.png` and `pets/dog/2.jpg`.

    Returns:
        (image paths, class names), classes and files in sorted order.

    Raises:
        WarmstartError: no class subfolders, or no images in them.
    """
    root = Path(path)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise WarmstartError(
            f"image folder {str(root)!r} has no class subfolders; put each class's images in "
            f"a subfolder named after it (e.g. {str(root / 'cat' / '1.png')!r})"
        )
    inputs: list[str] = []
    labels: list[str] = []
    for folder in classes:
        for file in sorted(folder.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                inputs.append(str(file))
                labels.append(folder.name)
    if not inputs:
        raise WarmstartError(
            f"image folder {str(root)!r} has no images in its class subfolders; "
            f"expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    check_images(inputs)
    return inputs, labels


def check_images(paths: list[str]) -> None:
    """Refuse empty, truncated or unreadable image files now, before a run starts, instead of
    at the batch that first loads one. Reads each file's structure (PIL's `verify`: headers,
    and for PNG every chunk's checksum), not its pixels.

    Raises:
        WarmstartError: naming the first bad file.
    """
    from PIL import Image

    for path in paths:
        try:
            if Path(path).stat().st_size == 0:
                raise WarmstartError(f"image file {path!r} is empty (0 bytes); remove it or "
                                     "copy it again")
            with Image.open(path) as img:
                img.verify()
        except WarmstartError:
            raise
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds for a broken file)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise WarmstartError(f"image file {path!r} cannot be read as an image ({first}); "
                                 "remove it or copy it again") from None


# --------------------------------------------------------------------------- helpers

def _read_frame(path: Path) -> pd.DataFrame:
    """Read a whole table with pandas, turning every way it can fail into one-line errors."""
    name = repr(str(path))
    if not path.is_file():
        raise WarmstartError(f"data file {name} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise WarmstartError(
            f"data file {name} has an unknown extension {path.suffix!r}; use one of "
            f"{', '.join(TABLE_FORMATS)} or a folder of images"
        )
    fmt = TABLE_FORMATS[suffix]
    try:
        if suffix in (".csv", ".tsv", ".tab"):
            # dtype=str and no NA guessing: a label "01" or a text "NA" stays as written.
            # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column.
            sep = _delimiter(path) if suffix == ".csv" else "\t"
            _check_csv(path, sep)
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                               encoding="utf-8-sig")
        if suffix == ".parquet":
            return pd.read_parquet(path)
        lines = True
        if suffix == ".json":  # JSON lines, or one array of records: the first character says
            with open(path, encoding="utf-8-sig") as f:
                lines = f.read(1024).lstrip()[:1] != "["
        return pd.read_json(
            path, lines=lines, dtype=False, encoding="utf-8-sig"
        )
    except UnicodeDecodeError:
        raise WarmstartError(
            f"data file {name} is not UTF-8 text; save it as UTF-8 (e.g. re-export it from "
            "your spreadsheet as 'CSV UTF-8')"
        ) from None
    except pd.errors.EmptyDataError:
        raise WarmstartError(
            f"data file {name} is empty; it needs a header row and at least one example"
        ) from None
    except (pd.errors.ParserError, pa.ArrowException, ValueError, json.JSONDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WarmstartError(
            f"cannot read data file {name} as {fmt}: {first}; fix the file or convert it to a "
            "UTF-8 CSV with a header row"
        ) from None
    except OSError as e:  # permissions, a directory named like a file, I/O errors
        raise WarmstartError(
            f"cannot read data file {name}: {e.strerror or e}; check its permissions"
        ) from None


def _delimiter(path: Path) -> str:
    """A .csv's delimiter, from its header row: `,` unless the header holds none and holds
    `;` (as spreadsheets write under a decimal-comma locale), tabs or `|` instead."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
    if "," in header:
        return ","
    counts = {sep: header.count(sep) for sep in (";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _check_csv(path: Path, sep: str) -> None:
    """What pandas lets through silently: a header naming a column twice (it renames the
    second `label.1`) and broken quoting (an unclosed quote swallows the rows after it).
    Python's csv reader in strict mode finds both, naming the line."""
    name = repr(str(path))
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep, strict=True)
        try:
            header = next(reader, [])
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise WarmstartError(f"data file {name} has {len(header)} columns, two of "
                                     f"them named {twice[0]!r}; rename one in the header row")
            for _ in reader:
                pass
        except csv.Error as e:
            raise WarmstartError(
                f"data file {name} line {reader.line_num}: broken quoting ({e}); a quote "
                'inside a quoted text must be doubled ("") and every opened quote closed'
            ) from None


def _as_str(value: Any) -> str | None:
    """A cell as a string, or None when missing or blank."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if float(value).is_integer():
            value = int(value)  # an integer label column with gaps comes back as 3.0
    text = str(value)
    return text if text.strip() else None
