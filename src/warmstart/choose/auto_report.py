"""`warmstart auto`'s reports: the winner among what finished, `auto.json` and `report.md`.

Read after the probe, the race and the soup have ended (or were stopped at the budget or
by Ctrl-C): every candidate that finished is scored by its validation metric, the best is
named, and the report says what was tried, what each scored and cost, and why it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.files import atomic_write_text
from warmstart.summary import read_summary
from warmstart.tasks import lower_is_better

# The soups' run directories in the auto folder, by their key in auto.json: the soup made
# after the race, and the one made after the later rounds (if they changed the best runs).
SOUPS = {"soup": "soup", "final_soup": "soup-final"}


def finish(out: Path, facts: dict[str, Any], console: Console) -> None:
    """Name the winner among the probe, the race's complete trials and the soups (those
    made); write the reports."""
    candidates = []
    if "probe" in facts:
        candidates.append(("features (probe)", facts["probe"]["score"], facts["probe"]["run"]))
    race = out / "race" / "search.json"
    trials = json.loads(race.read_text(encoding="utf-8"))["trials"] if race.is_file() else []
    for t in trials:
        if t["outcome"] == "complete":
            label = _trial_label(t)
            candidates.append((label, t["score"], t["run"]))
    for key, folder in SOUPS.items():
        made = facts.get(key) or {}
        if made.get("outcome") == "made":  # greedy: never below the best run it averages
            candidates.append((_soup_label(key, made), made["score"], str(out / folder)))
    metric = facts.get("probe", {}).get("metric", "accuracy")
    sign = -1 if lower_is_better(metric) else 1
    scored = [c for c in candidates if isinstance(c[1], float) and math.isfinite(c[1])]
    # The soup wins a tie: greedy souping starts from the best race run and keeps a run only
    # if validation does not drop, so a tie means the others joined at no cost on validation,
    # and an average of several runs is the more robust model (Wortsman et al. 2022).
    soups = [str(out / folder) for folder in SOUPS.values()]
    best = max(scored, key=lambda c: (sign * c[1], c[2] in soups)) if scored else None
    facts["best"] = best[2] if best else None
    facts["winner"] = ({"what": best[0], "score": best[1], "why": f"the best validation "
                        f"{metric} of {len(scored)} finished candidate(s)"} if best else None)
    if best:
        summary = read_summary(Path(best[2]))
        facts["winner"]["test"] = summary.headline if summary.test else None
    atomic_write_text(out / "auto.json", json.dumps(facts, indent=1, default=str) + "\n")
    lines = [f"# warmstart auto: {out.name}", "",
             f"- **budget**: {facts['budget_seconds']:.0f} s; used {facts['seconds']:.0f} s",
             f"- **probe**: {json.dumps(facts.get('probe'))}",
             f"- **plan**: {json.dumps(facts.get('plan'))}",
             f"- **estimate vs result**: {_estimate_line(facts)}",
             f"- **stopped**: {facts.get('stopped', 'all planned trials ended')}",
             *[f"- **{key}**: {json.dumps(facts[key])}" for key in SOUPS if key in facts],
             f"- **winner**: {json.dumps(facts['winner'])} -> {facts['best']}", "",
             "| candidate | outcome | validation | epochs | seconds | why it stopped |",
             "|---|---|---|---|---|---|"]
    if "probe" in facts:
        lines.append(f"| features (probe) | complete | {facts['probe']['score']:.4f} | 1 | "
                     f"{facts['probe']['seconds']:.0f} | |")
    for t in trials:
        label = _trial_label(t)
        score = f"{t['score']:.4f}" if isinstance(t.get("score"), float) else ""
        lines.append(f"| {label} | {t['outcome']} | {score} | {t.get('epochs') or ''} | "
                     f"{t.get('seconds') or ''} | {t.get('why') or ''} |")
    for key in SOUPS:
        made = facts.get(key) or {}
        if made.get("runs"):
            score = f"{made['score']:.4f}" if isinstance(made.get("score"), float) else ""
            lines.append(f"| {_soup_label(key, made)} | {made['outcome']} | {score} | | | |")
    lines += ["", "Rules the candidates come from:", *[f"- {r}" for r in facts["rules"]], "",
              "The test score is the winner's only; every choice was made on validation."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    console.print(f"winner: {facts['winner']['what']} (validation {metric} "
                  f"{facts['winner']['score']:.4f}) -> {facts['best']}" if best else
                  "winner: none (nothing finished in the budget)", highlight=False)
    console.print(f"written: {out / 'auto.json'}, {out / 'report.md'}", highlight=False)


def _trial_label(trial: dict[str, Any]) -> str:
    """`strategy.name=partial, optim.lr=0.0009, strategy.k=2` (floats to 4 digits)."""
    return ", ".join(f"{k.removeprefix('value:')}={v:.4g}" if isinstance(v, float) else
                     f"{k.removeprefix('value:')}={v}" for k, v in trial.items()
                     if k.startswith("value:") and v is not None)


def _soup_label(key: str, made: dict[str, Any]) -> str:
    kept = f" (kept {len(made['kept'])})" if "kept" in made else ""
    return f"greedy {key.replace('_', ' ')} of the best {len(made['runs'])} race runs{kept}"


def _estimate_line(facts: dict[str, Any]) -> str:
    """What was known before training (LogME, the probe) against what training reached."""
    probe, winner = facts.get("probe") or {}, facts.get("winner") or {}
    if not probe:
        return "no probe finished"
    logme = probe.get("logme")
    parts = [f"LogME of the frozen features {logme:.3f}" if logme is not None else
             "no LogME (the probe did not cache features)",
             f"the probe's validation {probe['metric']} {probe['score']:.4f}"]
    if winner:
        parts.append(f"the winner's {winner['score']:.4f} ({winner['what']})")
    return "; ".join(parts)
