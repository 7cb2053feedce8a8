"""The comparison's reports, from synthetic run summaries (no training): the table against the
summaries, best marks, the model card, and report.html in headless Chromium.

How the page is checked in Chromium (`check_in_chromium`): the test copies report.html next to
itself with a small probe script first in <head>. The probe records every `error` event in
the capture phase (script errors *and* resources that failed to load, which Chromium's console
log does not show), unhandled promise rejections and console.error/warn calls; at `load` it
measures every chart image (decoded width and height) and writes the findings into the DOM,
which `--dump-dom` prints. Independently, `--enable-logging=stderr --v=0` prints each console
message the page produces as a `CONSOLE` line on stderr; the report has no scripts, so any
such line is a failure. A dead proxy makes any network fetch fail, so a page that needed the
network would report a load error. `test_checker_catches_broken_pages` shows that a page with
a script error, a missing image and a remote image fails all of these checks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from warmstart.config import load_config
from warmstart.report.build import write_reports
from warmstart.report.card import model_card, strategy_options
from warmstart.report.table import COLUMNS, best_of, summarize
from warmstart.summary import RunSummary, read_summary

CHART_IDS = {"learning-curves", "quality-vs-params", "quality-vs-time", "confusion-matrix"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    "--proxy-server=http://127.0.0.1:9",  # a dead proxy: anything fetched from a network fails
    "--enable-logging=stderr", "--v=0",
]
PROBE = """<script>(function () {
  var seen = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    seen.push(t && t !== window && t.tagName ? "failed to load " + t.tagName + " "
              + (t.currentSrc || t.src || t.href) : "error: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    seen.push("rejection: " + e.reason);
  });
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      seen.push(level + ": " + Array.prototype.join.call(arguments, " "));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var charts = Array.prototype.map.call(document.querySelectorAll("figure img"), function (img) {
      return {id: img.closest("figure").id, width: img.naturalWidth, height: img.naturalHeight,
              complete: img.complete, inline: img.src.indexOf("data:image/") === 0};
    });
    var out = document.createElement("pre");
    out.id = "probe-result";
    out.textContent = JSON.stringify({errors: seen, charts: charts});
    document.body.appendChild(out);
  });
})();</script>"""


def chromium() -> str | None:
    """The Chromium binary, if installed (Debian: apt-get install -y chromium)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="Chromium not installed: apt-get install -y chromium "
    "chromium-driver (.ci/run does it on CI)")


@dataclass
class PageCheck:
    """What Chromium saw: probe errors, console lines on stderr, and the chart images."""

    errors: list[str]
    console: list[str]
    charts: list[dict]


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90, check=False)


def check_in_chromium(page: Path, work: Path) -> PageCheck:
    """Open `page` with the probe in headless Chromium and report what it found."""
    probed = page.with_name(f".probe-{page.name}")  # same folder: relative links resolve alike
    text = page.read_text(encoding="utf-8")
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    done = _run_chromium(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                         work / "profile-dom")
    probed.unlink()
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not report (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return PageCheck(result["errors"], console, result["charts"])


def screenshot(page: Path, png: Path, work: Path) -> Path:
    """Save a full-page-ish screenshot; also copy it to $WARMSTART_ARTIFACTS when set."""
    done = _run_chromium(["--hide-scrollbars", "--window-size=1280,4200",
                          f"--screenshot={png}", page.as_uri()], work / "profile-shot")
    assert png.is_file() and png.stat().st_size > 10_000, done.stderr[-2000:]
    if os.environ.get("WARMSTART_ARTIFACTS"):
        dest = Path(os.environ["WARMSTART_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, dest / png.name)
    return png


def not_blank(png_bytes: bytes) -> bool:
    """An image with more than one colour in it."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png_bytes), format="png")
    return float(pixels.std()) > 0.01


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def assert_report_ok(report: Path, work: Path, shot_name: str) -> None:
    """The whole check of a report.html: self-contained, loads cleanly, every chart drawn."""
    text = report.read_text(encoding="utf-8")
    links = _Links()
    links.feed(text)
    remote = [u for u in links.urls if re.match(r"(https?:)?//", u)]
    assert not remote, f"report.html fetches from a network: {remote}"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == len(CHART_IDS)
    assert all(not_blank(base64.b64decode(b)) for b in images)

    check = check_in_chromium(report, work)
    assert check.errors == [] and check.console == [], (check.errors, check.console)
    assert {c["id"] for c in check.charts} == CHART_IDS
    for chart in check.charts:
        assert chart["complete"] and chart["inline"], chart
        assert chart["width"] > 100 and chart["height"] > 100, chart
    assert not_blank(screenshot(report, work / shot_name, work).read_bytes())


# --------------------------------------------------------------------------- synthetic runs

LABELS = ["food", "sport", "tech"]


def _metrics(acc: float) -> dict:
    per_class = {name: {"precision": acc, "recall": acc - 0.01 * i, "f1-score": acc - 0.02 * i,
                        "support": 10.0} for i, name in enumerate(LABELS)}
    return {"loss": 1 - acc, "accuracy": acc, "precision_macro": acc, "recall_macro": acc,
            "f1_macro": acc - 0.02, "per_class": per_class,
            "confusion_matrix": [[8, 1, 1], [0, 9, 1], [1, 2, 7]]}


def fake_summary(run: str, strategy: str, seed: int, acc: float, trainable: int) -> RunSummary:
    """A run summary with every field `warmstart train` writes, made-up numbers."""
    history = [{"epoch": e, "step": 5 * e, "train_loss": 1.2 / e, "train_accuracy": acc,
                "val_loss": 1.0 / e, "val_accuracy": acc - 0.1 / e, "val_f1_macro": acc - 0.1}
               for e in (1, 2, 3)]
    return RunSummary.from_dict({
        "run": run, "model": "tiny-bert", "data": "toy.csv", "strategy": strategy,
        "labels": LABELS, "examples": {"train": 60, "validation": 30, "test": 30},
        "best_epoch": 2 + seed % 2, "epochs": 3, "stopped_early": False, "steps": 15,
        "validation": _metrics(acc - 0.03), "test": _metrics(acc), "train": {"accuracy": acc},
        "final_epoch": history[-1], "history": history,
        "params": {"trainable": trainable, "total": 10_000, "fraction": trainable / 10_000},
        "lr": {"base": 1e-3, "groups": {}}, "train_seconds": 2.0 + acc + seed,
        "cache_seconds": 0.0, "wall_seconds": 9.0, "samples_per_second": 100 * acc + seed,
        "peak_memory_mb": 500.0 + seed, "device": "cpu", "precision": "fp32", "processes": 1,
        "global_batch": 8, "threads": 2, "seed": seed,
        "versions": {"warmstart": "0.1.0", "torch": "2", "python": "3"},
    })


STRATEGIES = {"head": (0.70, 99), "partial:k=1": (0.80, 2_000), "full": (0.85, 10_000)}


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A comparison folder with 3 strategies x 2 seeds of synthetic runs, and its reports."""
    out = tmp_path_factory.mktemp("report") / "compare-fake"
    groups: dict[str, list] = {}
    for strategy, (acc, trainable) in STRATEGIES.items():
        for seed in (0, 1):
            name = f"{strategy.replace(':', '-').replace('=', '')}-seed{seed}"
            summary = fake_summary(str(out / name), strategy.split(":")[0], seed,
                                   acc + 0.01 * seed, trainable)
            (out / name).mkdir(parents=True)
            (out / name / "summary.json").write_text(json.dumps(summary.to_dict()))
            steps = [{"kind": "step", "step": s, "loss": 1.5 - 0.05 * s} for s in range(1, 16)]
            (out / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, steps)) + "\n")
            groups.setdefault(strategy, []).append((name, summary))
    cfg = load_config(None, ["model.name=tiny-bert", "train.epochs=3"])
    write_reports(out, groups, cfg, Console(file=io.StringIO()))
    return out, groups


def _float(text: str) -> float:
    return float(text) if text else math.nan


def check_table_against_summaries(out: Path) -> None:
    """results.csv's numbers are the mean and sample std of the summaries on disk."""
    import csv

    with (out / "results.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        runs = [p for p in out.iterdir() if (p / "summary.json").is_file()
                and p.name.rsplit("-seed", 1)[0] == _slug(row["strategy"])]
        summaries = [read_summary(p) for p in runs]
        assert len(summaries) == int(row["runs"])
        for col in COLUMNS:
            values = [col.value(s) for s in summaries]
            assert _float(row[f"{col.key}_mean"]) == pytest.approx(statistics.fmean(values))
            std = statistics.stdev(values) if len(values) > 1 else math.nan
            assert _float(row[f"{col.key}_std"]) == pytest.approx(std, nan_ok=True)


def _slug(spec: str) -> str:
    from warmstart.choose.specs import parse_spec

    return parse_spec(spec).slug


def test_table_matches_summaries(compare_dir):
    out, _ = compare_dir
    check_table_against_summaries(out)
    gap = [c for c in COLUMNS if c.key == "overfit_gap"][0]
    summary = read_summary(out / "full-seed0")
    assert gap.value(summary) == pytest.approx(0.85 - 0.82)  # train acc - validation acc


def test_best_values_are_marked(compare_dir):
    out, groups = compare_dir
    best = best_of(summarize(groups))
    assert best["test_accuracy"] == {"full"} and best["trainable_params"] == {"head"}
    assert best["train_seconds"] == {"head"} and "best_epoch" not in best
    md = (out / "report.md").read_text()
    assert "| full | 2 | **0.8550 ± 0.0071** |" in md
    assert "**99**" in md  # the fewest trainable parameters; no spread for a fixed count
    html_text = (out / "report.html").read_text()
    assert html_text.count('class="best"') == sum(len(v) for v in best.values())


def test_model_card_sections(tmp_path):
    cfg = load_config(None, ["model.name=tiny-bert", "strategy.name=partial", "strategy.k=1",
                             "data.limit=60"])
    card = model_card(tmp_path / "partial-k1-seed0",
                      fake_summary("r", "partial", 0, 0.8, 2_000), cfg)
    for heading in ("## Model", "## Data", "## Metrics", "## Training", "## Intended use",
                    "## Limitations"):
        assert heading in card
    assert "- strategy: partial (k=1, groups=[], patterns=[])" in card
    assert "| sport | 0.8000 | 0.7900 | 0.7800 | 10 |" in card  # per class, test split
    assert "data.limit=60" in card and "tiny-bert" in card
    assert strategy_options(load_config(None, ["strategy.name=llrd"])) == {"decay": 0.9}


@needs_chromium
def test_report_html_in_chromium(compare_dir, tmp_path):
    out, _ = compare_dir
    assert_report_ok(out / "report.html", tmp_path, "report-synthetic.png")


@needs_chromium
def test_checker_catches_broken_pages(tmp_path):
    """The Chromium check itself: a broken page must fail it in every way it is broken."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<figure id="a"><img src="missing.png"></figure>'
                    '<figure id="b"><img src="http://example.invalid/x.png"></figure>'
                    '<script>console.error("boom"); notDefined();</script></body></html>')
    check = check_in_chromium(page, tmp_path)
    text = " | ".join(check.errors)
    assert "boom" in text and "notDefined" in text
    assert "missing.png" in text and "example.invalid" in text
    assert any("notDefined" in line for line in check.console)
    assert all(c["width"] == 0 for c in check.charts)


def _row(strategy, acc, seconds):
    from warmstart.report.table import Row

    return Row(strategy, [], {"test_accuracy": acc, "test_f1_macro": acc,
                              "train_seconds": seconds}, {})


def test_the_pick_names_the_best_and_the_cheapest_within_a_point():
    from warmstart.report.build import recommendation

    rows = [_row("head", 0.905, 6.0), _row("lora", 0.93, 70.0), _row("full", 0.935, 120.0)]
    text = recommendation(rows)
    assert text.startswith("full: the highest mean test accuracy (0.9350, 120 s")
    assert "for 1.7x less training time, lora comes within a point (0.9300, 70 s)" in text
    assert "cheaper" in recommendation([_row("head", 0.80, 6.0), _row("full", 0.93, 120.0)])


def test_the_report_shows_the_pick(compare_dir):
    out, _ = compare_dir
    report = (out / "report.md").read_text()
    # full (0.85/0.86) is best; partial (0.80/0.81) is 5 points behind: no cheaper pick.
    assert "- **pick**: full: the highest mean test accuracy (0.8550" in report
