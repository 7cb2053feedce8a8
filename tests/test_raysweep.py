"""`warmstart compare --ray`: a real two-strategy comparison whose runs train in parallel as
tasks of a local Ray instance (`ray.init(num_cpus=2)`), and the error without Ray."""

from __future__ import annotations

import sys

import pytest
from conftest import make_rows, write_csv
from test_report import check_table_against_summaries

from warmstart.cli import main

# Enough epochs and examples that each run trains for seconds, longer than the runs' start
# times differ (Ray starts its workers up to a second apart on a quiet machine; with 36
# examples a run took 0.6 s and the two did not overlap), so the test can see that they
# overlapped.
TINY = ["model.name=tiny-bert", "train.epochs=24", "train.batch_size=8", "optim.lr=1e-3"]
PER_CLASS = 120
RUNS = ("full-seed0", "partial-k1-seed0")


def _args(tmp_path, *extra):
    data = write_csv(tmp_path / "toy.csv", make_rows(PER_CLASS))
    return ["compare", *TINY, f"data.name={data}", f"output.dir={tmp_path / 'runs'}",
            "--strategies", "full,partial:k=1", "--name", "t", "--quiet", *extra]


def test_without_ray_the_error_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as if not installed
    code = main(_args(tmp_path, "--ray", "local"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "pip install 'warmstart[ray]'" in err, err
    assert not (tmp_path / "runs").exists()  # nothing trained


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                              "'warmstart[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_compare_trains_its_runs_in_parallel_on_ray(ray_session, tmp_path):
    assert main(_args(tmp_path, "--ray", "local")) == 0
    out = tmp_path / "runs" / "compare-t"
    for run in RUNS:
        assert (out / run / "summary.json").is_file()
        assert (out / "logs" / f"{run}.log").is_file()
    for name in ("results.csv", "report.md", "report.html"):
        assert (out / name).is_file()
    check_table_against_summaries(out)
    # The two runs overlapped: each had started before either finished.
    started = [(out / run / "config.yaml").stat().st_mtime for run in RUNS]
    finished = [(out / run / "summary.json").stat().st_mtime for run in RUNS]
    assert max(started) < min(finished), (started, finished)
    assert ray_session.is_initialized()  # a session the caller opened is left open
