"""`setup`: what it says at start about settings the data or the model overrule."""

from __future__ import annotations

import pytest
from conftest import make_rows, write_csv

from warmstart.config import load_config
from warmstart.errors import WarmstartError
from warmstart.training.session import setup

TINY = ["model.name=tiny-bert", "train.epochs=1", "train.batch_size=8", "optim.lr=1e-3"]


def test_max_length_above_the_models_limit_is_said_and_recorded(text_csv):
    session = setup(load_config(None, [*TINY, f"data.name={text_csv}",
                                       "model.max_length=100000"]))
    used = session.adapter.extra["max_length"]
    assert used < 100000
    assert session.cfg.model.max_length == used  # what the card and config record
    assert any(f"limit of {used} tokens" in n and "100000" in n for n in session.notes)


def test_max_length_within_the_limit_says_nothing(text_csv):
    session = setup(load_config(None, [*TINY, f"data.name={text_csv}"]))
    assert session.notes == [] and session.cfg.model.max_length == 64


def test_an_input_column_that_names_the_label_is_warned_about(tmp_path):
    rows = make_rows()
    path = tmp_path / "leak.csv"
    path.write_text("text,topic,label\n" + "".join(f'"{t}",{y},{y}\n' for t, y in rows))
    session = setup(load_config(None, [*TINY, f"data.name={path}", "data.text_column=topic"]))
    assert any("data.text_column 'topic'" in n and "names the label" in n
               for n in session.notes)


def test_text_column_equal_to_label_column_is_refused(text_csv):
    with pytest.raises(WarmstartError, match="data.text_column.*would read the answer"):
        load_config(None, [*TINY, f"data.name={text_csv}", "data.text_column=label"])


def test_rows_with_missing_label_strings_are_dropped_and_counted(tmp_path):
    rows = make_rows()
    path = write_csv(tmp_path / "na.csv", [*rows, ("a text", "NaN"), ("b text", "NA"),
                                           ("c text", ""), ("d text", "null")])
    session = setup(load_config(None, [*TINY, f"data.name={path}"]))
    assert sorted(session.data.label_names) == ["food", "sport", "tech"]
    assert "4 rows without a label dropped" in session.data.source
