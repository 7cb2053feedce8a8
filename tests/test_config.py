"""Config loading: YAML + dotted overrides, typed values, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.config import RunConfig, all_keys, dump_config, field_help, load_config
from warmstart.errors import WarmstartError


def test_defaults_round_trip_through_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(RunConfig()))
    assert load_config(path) == RunConfig()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.001\ntrain:\n  epochs: 5\n")
    cfg = load_config(path, ["optim.lr=3e-5", "strategy.name=partial", "strategy.k=1",
                             "model.image_size=64", "optim.clip_norm=null"])
    assert cfg.optim.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 5
    assert (cfg.strategy.name, cfg.strategy.options.k) == ("partial", 1)
    assert cfg.model.image_size == 64
    assert cfg.optim.clip_norm is None


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1e-3", ["optim.lrr", "optim.lr"]),
    ("trian.epochs=2", ["trian.epochs", "train.epochs"]),
    ("train.epochs=two", ["train.epochs", "integer"]),
    ("train.epochs=0", ["train.epochs", ">= 1"]),
    ("optim.schedule=cosin", ["optim.schedule", "linear"]),
    ("data.val_fraction=1.5", ["data.val_fraction"]),
    ("train.group_by_length=maybe", ["train.group_by_length", "true or false"]),
    ("epochs", ["key.sub=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(WarmstartError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_key_in_yaml_suggests(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  batchsize: 8\n")
    with pytest.raises(WarmstartError, match="train.batch_size"):
        load_config(path)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(WarmstartError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(WarmstartError, match="not valid YAML"):
        load_config(bad)


def test_every_key_is_documented():
    keys = all_keys()
    assert "optim.lr" in keys and "strategy.name" in keys
    undocumented = [k for k, _, help_ in field_help() if not help_]
    assert undocumented == []
    assert len(field_help()) == len(keys)


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_start_with_their_command(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# warmstart train -c configs/{path.name}"
    cfg = load_config(path)
    assert cfg.output.name == path.stem


def test_yaml_exponent_without_a_dot_is_the_number_users_mean(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  eps: 1E-8\nregularize:\n  l2sp: 5e-3\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.eps, cfg.regularize.l2sp) == (1e-4, 1e-8, 5e-3)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(WarmstartError, match="optim.lr.*expected a number"):
        load_config(path)


def test_config_changes_lists_only_what_differs_from_the_defaults():
    from warmstart.config import config_changes

    assert config_changes(RunConfig()) == []
    cfg = load_config(None, ["optim.lr=3e-5", "strategy.name=partial", "strategy.k=1"])
    assert config_changes(cfg) == ["strategy.name=partial", "strategy.k=1", "optim.lr=3e-05"]
