"""Each strategy's own options: registered with it, typed, checked, saved flat."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import yaml

from warmstart.config import dump_config, field_help, load_config, read_run_config
from warmstart.errors import WarmstartError
from warmstart.options import STRATEGY_OPTIONS, StrategyConfig, own_options_only
from warmstart.strategies import STRATEGIES


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_registers_documented_options(name):
    options = STRATEGY_OPTIONS.get(name)
    assert dataclasses.is_dataclass(options)
    assert all(f.metadata.get("help") for f in dataclasses.fields(options))
    cfg = load_config(None, [f"strategy.name={name}"])
    assert isinstance(cfg.strategy.options, options)
    saved = yaml.safe_load(dump_config(cfg))["strategy"]
    assert list(saved) == ["name", *(f.name for f in dataclasses.fields(options))]


def test_registries_name_the_same_strategies():
    assert [e.name for e in STRATEGY_OPTIONS] == STRATEGIES.names()


def test_an_option_of_another_strategy_is_named_with_its_owner():
    with pytest.raises(WarmstartError) as e:
        load_config(None, ["strategy.name=partial", "strategy.r=4"])
    message = str(e.value)
    assert "'strategy.r'" in message and "option of lora" in message
    assert "partial's options: k, groups, patterns" in message
    assert "\n" not in message


def test_an_unknown_option_suggests_the_strategys_nearest():
    with pytest.raises(WarmstartError, match=r"for strategy 'llrd' \(did you mean 'decay'\?\); "
                                             r"llrd's options: decay"):
        load_config(None, ["strategy.name=llrd", "strategy.decy=0.8"])


def test_option_values_are_typed_and_checked():
    cfg = load_config(None, ["strategy.name=lora", "strategy.r=4", "strategy.alpha=8"])
    assert (cfg.strategy.options.r, cfg.strategy.options.alpha) == (4, 8.0)
    with pytest.raises(WarmstartError, match="'strategy.r': must be >= 1"):
        load_config(None, ["strategy.name=lora", "strategy.r=0"])
    with pytest.raises(WarmstartError, match="'strategy.k': expected an integer"):
        load_config(None, ["strategy.name=partial", "strategy.k=two"])
    with pytest.raises(WarmstartError, match="unknown strategy 'parital'.*'partial'"):
        load_config(None, ["strategy.name=parital"])


def test_options_in_yaml_follow_the_name_set_later(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("strategy:\n  name: full\n")
    cfg = load_config(path, ["strategy.k=1", "strategy.name=partial"])
    assert cfg.strategy == StrategyConfig.of("partial", k=1)


def test_help_lists_each_option_once_with_its_strategies():
    rows = {key: text for key, _, text in field_help() if key.startswith("strategy.")}
    assert rows["strategy.target_modules"].startswith("ia3, lora: ")
    assert rows["strategy.k"].startswith("partial: ")


def test_a_config_saved_with_every_strategys_options_still_reads(tmp_path):
    # config.yaml as written before options moved into each strategy: one flat union.
    old = {"strategy": {"name": "partial", "k": 1, "groups": [], "patterns": [],
                        "decay": 0.9, "r": 8, "classifier": "torch"}}
    assert own_options_only(old)["strategy"] == {"name": "partial", "k": 1, "groups": [],
                                                  "patterns": []}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert read_run_config(path).strategy == StrategyConfig.of("partial", k=1)
    with pytest.raises(WarmstartError, match="does not apply to strategy 'partial'"):
        load_config(path)  # a user's file is still checked strictly


def test_a_new_strategy_with_an_option_touches_only_its_own_file(tmp_path):
    # A plug-in strategy in its own module: registering it is all it takes for the config
    # keys, their checks, --help and the saved config.
    (tmp_path / "my_strategy.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from warmstart.options import check, option
        from warmstart.strategies._select import everything, groups_of, mark_trainable
        from warmstart.strategies.base import Plan, register_strategy

        @dataclass
        class ShrinkOptions:
            factor: float = option(0.5, "lr scale of every group")

            def __post_init__(self):
                check(0 < self.factor <= 1, "strategy.factor", "must be in (0, 1]")

        @register_strategy("shrink", "everything at a smaller lr", ShrinkOptions)
        def shrink(adapter, cfg):
            chosen = everything(adapter)
            mark_trainable(adapter, chosen)
            return Plan(groups_of(adapter, chosen, [cfg.factor] * len(adapter.groups)))
    '''))
    probe = textwrap.dedent('''
        import my_strategy
        from warmstart.config import dump_config, field_help, load_config
        from warmstart.errors import WarmstartError
        cfg = load_config(None, ["strategy.name=shrink", "strategy.factor=0.25"])
        assert cfg.strategy.options.factor == 0.25
        assert "factor: 0.25" in dump_config(cfg)
        assert any(k == "strategy.factor" and h.startswith("shrink: ")
                   for k, _, h in field_help())
        try:
            load_config(None, ["strategy.name=shrink", "strategy.factor=2"])
        except WarmstartError as e:
            print("refused:", e)
    ''')
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: config key 'strategy.factor': must be in (0, 1]" in done.stdout


# ------------------------------------------------------------------ per-strategy defaults

@pytest.mark.parametrize("name", STRATEGIES.names())
@pytest.mark.parametrize("kind", ["text", "image"])
def test_each_strategys_declared_defaults_apply_and_yield_to_the_config(name, kind):
    from warmstart.strategies import STRATEGY_DEFAULTS
    from warmstart.training.session import EPOCHS, choose

    declared = STRATEGY_DEFAULTS[name].get(kind)
    chosen = choose(load_config(None, [f"strategy.name={name}"]), kind, model_lr=7e-4)
    assert chosen.lr == (declared.lr if declared and declared.lr else 7e-4)
    assert chosen.epochs == (declared.epochs if declared and declared.epochs else EPOCHS)
    if declared and declared.lr:
        assert chosen.lr_from.startswith(f"{name}'s default for {kind} models")
        assert declared.why, f"{name} declares a {kind} default without saying why"
    assert chosen.head_lr is None  # only optim.head_lr sets one
    given = choose(load_config(None, [f"strategy.name={name}", "optim.lr=0.123",
                                      "train.epochs=3"]), kind, model_lr=7e-4)
    assert (given.lr, given.lr_from, given.epochs, given.epochs_from) == (
        0.123, "optim.lr", 3, "train.epochs")
    assert given.head_lr is None  # the user's optim.lr applies to the whole model
    head = choose(load_config(None, [f"strategy.name={name}", "optim.head_lr=0.5"]), kind,
                  model_lr=7e-4)
    assert (head.head_lr, head.head_lr_from) == (0.5, "optim.head_lr")


def test_the_head_trains_at_its_own_lr_and_the_summary_records_it(tmp_path):
    from conftest import make_rows, write_csv

    from warmstart.cli import main
    from warmstart.summary import read_summary

    data = write_csv(tmp_path / "d.csv", make_rows(12))
    assert main(["train", "model.name=tiny-bert", "strategy.name=full", f"data.name={data}",
                 "optim.lr=1e-4", "optim.head_lr=3e-3", "train.epochs=1",
                 f"output.dir={tmp_path}", "output.name=r", "log.quiet=true"]) == 0
    rates = read_summary(tmp_path / "r").lr
    assert rates.base == 1e-4
    assert rates.groups["head"] == pytest.approx(3e-3)
    assert all(v == pytest.approx(1e-4) for k, v in rates.groups.items() if k != "head")


def test_a_run_uses_and_reports_its_strategys_defaults(tmp_path, capsys):
    from conftest import make_rows, write_csv

    from warmstart.cli import main
    from warmstart.strategies import STRATEGY_DEFAULTS
    from warmstart.summary import read_summary

    declared = STRATEGY_DEFAULTS["head"]["text"]
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    assert main(["train", "model.name=tiny-bert", "strategy.name=head", f"data.name={data}",
                 f"output.dir={tmp_path}", "output.name=r", "log.quiet=true"]) == 0
    summary = read_summary(tmp_path / "r")
    assert (summary.lr.base, summary.epochs) == (declared.lr, declared.epochs)
    assert f"lr {declared.lr:g} (head's default for text models" in capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["optim"]["lr"] is None  # the user's config as given: resolved again on resume
