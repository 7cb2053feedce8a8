"""The command line: one function per verb, nothing clever.

    warmstart train [-c run.yaml] [key.sub=value ...] [--overwrite] [--quiet]
    warmstart train --resume RUN
    warmstart distill --teacher RUN --student MODEL|keep:0,2,4 [-c run.yaml] [key=value ...]
                      [--unlabelled FILE] [--overwrite] [--quiet] | --resume RUN
    warmstart compare [-c base.yaml] [key.sub=value ...] [--strategies head,partial:k=2,...]
                      [--seeds N|a,b,...] [--name NAME] [--overwrite] [--quiet]
                      [--ray ADDRESS [--ray-cpus N] [--ray-gpus N]]
    warmstart search [-c base.yaml] [key.sub=value ...] --space space.yaml [--trials N]
                     [--budget 20m] [--sampler tpe|random|grid] [--pruner median|hyperband|none]
                     [--name NAME] [--resume] [--quiet] [--ray ADDRESS]
    warmstart auto [-c base.yaml] [key.sub=value ...] --budget 10m [--name NAME] [--ray ADDR]
    warmstart evaluate RUN --data file.csv [--output metrics.json]
    warmstart predict RUN (--text "..." ... | --input file.csv) [--output out.csv|out.json]
    warmstart export RUN OUT [--merge]
    warmstart ensemble RUN... --out DIR [--weights greedy|equal]    (ship/combine.py)
    warmstart soup RUN... --out DIR [--how greedy|uniform]
    warmstart ls [models|datasets|strategies]

A mistake the user can make ends with one line on stderr and exit status 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from warmstart.choose import raysweep  # light: the Ray options and map; Ray loads on use
from warmstart.errors import WarmstartError  # (the package sets HF_HUB_OFFLINE first)
from warmstart.files import atomic_write_text, check_writable


def cmd_train(args: argparse.Namespace) -> int:
    from warmstart.config import load_config
    from warmstart.training.run import train

    if args.resume:
        if args.overwrite:
            raise WarmstartError("--resume continues a run and --overwrite starts it over; "
                                 "pass one of them")
        # The run continues exactly as configured: its saved config is the only config.
        if args.config or args.overrides:
            raise WarmstartError("--resume takes the run's saved config.yaml; drop -c and "
                                 "key=value overrides (start a new run to change settings)")
        run = Path(args.resume)
        if not (run / "config.yaml").is_file():
            raise WarmstartError(f"{run} has no config.yaml: pass a run directory that "
                                 "`warmstart train` created")
        cfg = load_config(run / "config.yaml",
                          [f"output.dir={run.parent}", f"output.name={run.name}"])
    else:
        overrides = list(args.overrides)
        if args.overwrite:
            overrides.append("output.overwrite=true")
        cfg = load_config(args.config, overrides)
    try:
        train(cfg, quiet=args.quiet, resume=bool(args.resume))
    except KeyboardInterrupt:
        from warmstart.training.checkpoint import Checkpointer
        from warmstart.training.run import run_dir_of

        run = run_dir_of(cfg)
        latest = Checkpointer(run, 0, 1).latest()
        print("warmstart: interrupted; " + (
            f"continue from step {int(latest.name.removeprefix('step-'))} with "
            f"`warmstart train --resume {run}`" if latest is not None else
            "no checkpoint was written yet: run the same command again to start over"),
            file=sys.stderr)
        return 130
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from warmstart.distillation.run import config_of, distill

    distill(config_of(args), quiet=args.quiet, resume=bool(args.resume))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from warmstart.ship.predict import evaluate_file

    if args.output:
        check_writable(Path(args.output), "--output")  # before the metrics are computed
    from rich.console import Console

    # A progress bar on a terminal only: nothing with --quiet, in a pipe or a log file.
    metrics = evaluate_file(args.run, args.data, Console(stderr=True, quiet=args.quiet))
    text = json.dumps(metrics, indent=2)
    if args.output:
        atomic_write_text(Path(args.output), text + "\n")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if metrics.get("absent_classes"):
        absent = metrics["absent_classes"]
        print(f"note: {len(absent)} of the run's classes do not occur in {args.data} "
              f"({', '.join(map(str, absent[:10]))}{', ...' if len(absent) > 10 else ''}); "
              "the macro scores average over the classes it holds")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from warmstart.ship.output import prediction_format, write_predictions
    from warmstart.ship.predict import predict

    if sum(map(bool, (args.text, args.image, args.input))) != 1:
        raise WarmstartError("give one of --text \"...\" (repeatable), --image PATH "
                             "(repeatable) or --input FILE/FOLDER")
    if args.text_pair and len(args.text_pair) != len(args.text or []):
        raise WarmstartError(f"{len(args.text_pair)} --text-pair for {len(args.text or [])} "
                             "--text; give one --text-pair after each --text")
    prediction_format(args.output)  # a bad --output fails before the model runs
    if args.text:
        kind = "text"
        inputs = list(zip(args.text, args.text_pair)) if args.text_pair else args.text
    elif args.image:
        from warmstart.ship.predict import image_files

        inputs, kind = image_files(args.image), "image"
    else:
        from warmstart.ship.predict import read_inputs

        inputs, kind = read_inputs(args.run, args.input, args.column, args.pair_column)
    write_predictions(predict(args.run, inputs, kind), inputs, args.output)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from warmstart.ship.export import export

    out = export(args.run, args.out, merge=args.merge, fmt=args.format,
                 quantize=args.quantize, opset=args.opset)
    what = "ONNX model" if args.format == "onnx" else "merged model" if args.merge else "model"
    print(f"{what} of {args.run} written to {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from warmstart.ship.serve import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"serving {args.run} ({args.backend}) on http://{args.host}:{args.port} "
          "(POST /predict, GET /health, /metadata, /docs)", file=sys.stderr)
    serve(args.run, host=args.host, port=args.port, backend=args.backend,
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from warmstart.data import DATASETS
    from warmstart.models import MODELS
    from warmstart.options import STRATEGY_OPTIONS
    from warmstart.strategies import STRATEGIES

    registries = {"models": MODELS, "datasets": DATASETS, "strategies": STRATEGIES}
    for kind in [args.what] if args.what else list(registries):
        if not args.what:
            print(f"{kind}:")
        for entry in registries[kind]:
            options = ""
            if kind == "strategies":
                names = [f.name for f in dataclasses.fields(STRATEGY_OPTIONS.get(entry.name))]
                options = f" (options: {', '.join(names)})" if names else ""
            print(f"{'  ' if not args.what else ''}{entry.name:<20} {entry.description}{options}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from warmstart.choose.compare import compare, serial_map
    from warmstart.choose.specs import DEMO_OVERRIDES, registered_demo_strategies, split_specs

    # No config and no overrides: the demo settings (sized to finish in minutes on a CPU).
    demo = not (args.config or args.overrides)
    if not (demo or args.strategies):
        raise WarmstartError("with -c or key=value overrides, say what to compare: "
                             "--strategies head,partial:k=2,full (`warmstart compare` alone "
                             "runs the demo)")
    overrides = DEMO_OVERRIDES if demo else list(args.overrides)
    strategies = (split_specs(args.strategies) if args.strategies
                  else registered_demo_strategies(Console(stderr=True, quiet=args.quiet)))
    map_fn = raysweep.map_from_args(args) or serial_map
    compare(args.config, overrides, strategies, args.seeds,
            name=args.name or ("demo" if demo else None), overwrite=args.overwrite,
            quiet=args.quiet, map_fn=map_fn)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from warmstart.choose.search import search

    map_fn = raysweep.map_from_args(args)
    search(args.config, list(args.overrides), args.space, args.trials, budget=args.budget,
           sampler=args.sampler, pruner=args.pruner, name=args.name, resume=args.resume,
           quiet=args.quiet, map_fn=map_fn)
    return 0


def cmd_auto(args: argparse.Namespace) -> int:
    from warmstart.choose.auto import auto

    auto(args.config, list(args.overrides), args.budget, name=args.name, quiet=args.quiet,
         map_fn=raysweep.map_from_args(args))
    return 0


def _train_epilog() -> str:
    from warmstart.config import field_help

    lines = ["config keys (set in the YAML file or as key.sub=value):"]
    for key, default, help_ in field_help():
        lines.append(f"  {key:<24} {default!r:<14} {help_}")
    return "\n".join(lines)


def _add_config_args(p: argparse.ArgumentParser, config_help: str) -> None:
    """`-c FILE` and `key.sub=value` overrides, as every config-taking verb reads them."""
    p.add_argument("-c", "--config", help=config_help)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warmstart", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version",
                        version=f"warmstart {__import__('warmstart').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model (no arguments: minilm-l6 on bbc-news)",
                       epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p, "YAML config file (sections as in the keys below)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished or unfinished run of this name")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a stopped run from its latest checkpoint, exactly")
    p.set_defaults(func=cmd_train)

    from warmstart.distillation.args import add_parser as add_distill

    add_distill(sub).set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="metrics of a finished run on a labelled file")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", required=True, help="labelled CSV/TSV/JSONL/Parquet file; for "
                   "an image model, a folder with one subfolder of images per class")
    p.add_argument("--output", help="also write the full metrics as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="labels and probabilities from a finished run")
    p.add_argument("run", help="run directory")
    p.add_argument("--text", action="append", help="an input text (repeatable)")
    p.add_argument("--image", action="extend", nargs="+", metavar="PATH",
                   help="image files or folders of images, for image models (repeatable)")
    p.add_argument("--input", help="a CSV/TSV/JSONL/Parquet file of inputs (for an image "
                   "model: of image paths, in --column, default `path`), or a folder of images")
    p.add_argument("--text-pair", action="append",
                   help="the second text of the pair begun by the --text before it (models "
                        "trained with data.text_pair_column)")
    p.add_argument("--column", default=None,
                   help="input column of --input (default: the run's data.text_column; for "
                        "an image model, `path`)")
    p.add_argument("--pair-column", default=None,
                   help="pair column of --input (default: the run's data.text_pair_column)")
    p.add_argument("--output", help="write here, format by extension: .csv, .tsv, .jsonl "
                   "(JSON lines), .json (one array), .parquet; default: JSON lines on stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="compare strategies on the same data and seeds, with a "
                       "report (no arguments: a demo, minilm-l6 on bbc-news)")
    _add_config_args(p, "base YAML config shared by every run")
    p.add_argument("--strategies", help="comma-separated specs name[:key=value]... (e.g. "
                   "full,partial:k=2,llrd:decay=0.9,head:optim.lr=3e-2); needed with -c or "
                   "overrides; the demo runs head, partial:k=2, full and lora")
    p.add_argument("--seeds", default="1", help="how many seeds (from train.seed on), or a "
                   "comma-separated list of seeds (default: 1)")
    p.add_argument("--name", help="folder <output.dir>/compare-NAME (default: output.name, "
                   "else <model>-<data>; the demo: demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo finished runs too (default: reuse them)")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    raysweep.add_options(p, "runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("search", help="search a space of config keys with optuna; the best "
                       "trial's run directory is the result (pip install 'warmstart[search]')")
    _add_config_args(p, "base YAML config every trial starts from")
    p.add_argument("--space", required=True, help="YAML space file: config key -> {log|uniform|"
                   "int: [low, high]} or {categorical: [...]}, or a mapping of choices "
                   "(see README, Choosing automatically)")
    p.add_argument("--trials", type=int, help="trials the study holds when done (counted over "
                   "--resume); default: until --budget is spent (grid: the whole grid)")
    p.add_argument("--budget", help="wall-clock limit, e.g. 90s, 20m, 1h30m: no trial starts "
                   "after it and a running one is stopped at it")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid"],
                   help="how values are picked (default: tpe)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "halving", "none"],
                   help="stop bad trials on their per-epoch validation metric: median, "
                   "hyperband, successive halving, or none (default: median)")
    p.add_argument("--name", help="folder <output.dir>/search-NAME (default: output.name, "
                   "else <model>-<data>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in that folder (finished trials are kept)")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    raysweep.add_options(p, "trials")  # the study is shared through its SQLite file
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("auto", help="pick the strategy and learning rate for this data within "
                       "a hard time budget; the best run found is the result")
    _add_config_args(p, "base YAML config (model, data, ...)")
    p.add_argument("--budget", required=True, help="wall-clock limit of the whole command, "
                   "e.g. 90s, 10m, 1h")
    p.add_argument("--name", help="folder <output.dir>/auto-NAME (default: output.name, else "
                   "<model>-<data>)")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    raysweep.add_options(p, "race's trials")
    p.set_defaults(func=cmd_auto)

    p = sub.add_parser("export", help="copy a finished run's model to a folder, adapters "
                       "merged into the base weights with --merge")
    p.add_argument("run", help="run directory")
    p.add_argument("out", help="new folder to write the model to")
    p.add_argument("--merge", action="store_true",
                   help="lora/ia3 runs: fold the adapters into the weights (a plain model)")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: the saved layout (default); onnx: model.onnx for onnxruntime, "
                        "adapters merged, verified against PyTorch on the run's data")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="onnx: add a dynamically int8-quantized model, with its accuracy "
                        "change and speed-up on the run's test split")
    p.add_argument("--opset", type=int, default=17, help="onnx: the ONNX opset (default 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a run or an export over HTTP (FastAPI), with "
                       "micro-batching of concurrent requests")
    p.add_argument("run", help="run directory, its model/ folder, or an exported folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: serve an ONNX export through onnxruntime")
    p.add_argument("--max-batch", type=int, default=32, help="most items per model call")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest an item waits for others to share its model call")
    p.set_defaults(func=cmd_serve)

    from warmstart.ship.combine import add_parsers  # ensemble, soup (light: argparse only)

    add_parsers(sub)

    p = sub.add_parser("ls", help="list built-in models, datasets and strategies")
    p.add_argument("what", nargs="?", choices=["models", "datasets", "strategies"])
    p.set_defaults(func=cmd_ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `warmstart` command."""
    parser = build_parser()
    # parse_known_args: `key=value` overrides may come before or after options
    # (`warmstart train --quiet optim.lr=3e-5`), which plain argparse positionals refuse.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and args.command not in ("train", "distill", "compare", "search",
                                                  "auto")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except WarmstartError as e:
        print(f"warmstart: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("warmstart: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
