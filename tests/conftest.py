"""Shared fixtures: offline hub, few threads, tiny labelled data written to tmp files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach for a model hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

WORDS = {
    "sport": "match goal team player score league coach win season cup",
    "tech": "software chip computer phone internet data code device app cloud",
    "food": "bread cheese soup recipe kitchen bake salad flavour dinner spice",
}


def make_rows(n_per_class: int = 12, seed: int = 0) -> list[tuple[str, str]]:
    """Easy synthetic texts: each class draws from its own vocabulary."""
    import random

    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        vocab = words.split()
        for _ in range(n_per_class):
            rows.append((" ".join(rng.choices(vocab, k=rng.randint(4, 12))), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    lines = [header] + [f'"{t}",{y}' for t, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def text_csv(tmp_path: Path) -> Path:
    """A small 3-class CSV (36 rows) the tiny models can learn."""
    return write_csv(tmp_path / "toy.csv", make_rows())


@pytest.fixture(autouse=True)
def _threads():
    import torch

    torch.set_num_threads(2)
    yield
