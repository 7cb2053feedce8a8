"""Writing predictions: one record per input, in the format the output's extension names."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from warmstart.errors import WarmstartError
from warmstart.files import atomic_write_text, check_writable

PREDICTION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json",
                      ".parquet": "parquet"}


def prediction_format(output: str | None) -> str:
    """The format `--output` names by its extension (checked before any work is done)."""
    if output is None:
        return "jsonl"
    fmt = PREDICTION_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise WarmstartError(f"--output {output!r}: unknown extension {Path(output).suffix!r}; "
                             f"use one of {', '.join(PREDICTION_FORMATS)}")
    check_writable(Path(output), "--output")
    return fmt


def write_predictions(rows: list[dict[str, Any]], inputs: list[Any], output: str | None) -> None:
    """Write by the extension of `output` (JSON lines on stdout without one): one record per
    input with the input (and its pair), what the task predicts (label / labels joined by ;
    / score) and p_<label> for each probability; JSON keeps lists and nested probabilities."""
    fmt = prediction_format(output)
    if fmt in ("jsonl", "json"):
        records = [{"input": list(x) if isinstance(x, tuple) else str(x), **r}
                   for x, r in zip(inputs, rows)]
        text = ("".join(json.dumps(r) + "\n" for r in records) if fmt == "jsonl"
                else json.dumps(records, indent=1) + "\n")
    else:
        table = [_flat(x, r) for x, r in zip(inputs, rows)]
        if fmt == "parquet":
            import pandas as pd

            pd.DataFrame(table).to_parquet(output, index=False)
            return
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",")
        if table:
            writer.writerow(list(table[0]))
        for record in table:
            writer.writerow([f"{v:.6f}" if isinstance(v, float) and k.startswith("p_") else v
                             for k, v in record.items()])
        text = buf.getvalue()
    if output:
        atomic_write_text(Path(output), text)
    else:
        sys.stdout.write(text)


def _flat(x: Any, row: dict[str, Any]) -> dict[str, Any]:
    """One prediction as a flat record (a table row)."""
    out: dict[str, Any] = ({"input": x[0], "input_pair": x[1]} if isinstance(x, tuple)
                           else {"input": str(x)})
    for key, value in row.items():
        if key != "probabilities":
            out[key] = ";".join(value) if isinstance(value, list) else value
    return out | {f"p_{name}": p for name, p in row.get("probabilities", {}).items()}
