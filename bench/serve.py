"""Serving throughput and latency: `warmstart serve` (torch, onnx fp32, onnx int8) against the
tutorial anchor, a FastAPI endpoint calling a transformers `pipeline` per request (issue #17).

    python bench/serve.py                      # 10,000 requests at concurrency 32 per server
    python bench/serve.py --requests 2000      # shorter

One fine-tuned model serves on every side: minilm-l6 with its `pooler` head (the layout a
`pipeline` loads) fully fine-tuned for 2 epochs on TREC-2k, exported to ONNX (fp32, int8). Each
server is its own process on loopback, started, warmed up (50 requests), then loaded with
`--requests` single-text requests (short TREC questions) from `--concurrency` client tasks
(httpx). Reported: throughput, p50/p99 latency, errors, and the test accuracy of each
backend on TREC's test split; written to `bench/results/serve.json`. Measure on a quiet
machine and give the load average (`uptime`): client and server share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA_ROOT, RESULTS

ANCHOR = '''
import sys
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline
import uvicorn
clf = pipeline("text-classification", model=sys.argv[1], device="cpu")
app = FastAPI()
class Body(BaseModel):
    inputs: list[str]
@app.post("/predict")
def predict(body: Body):
    return {"predictions": clf(body.inputs)}
@app.get("/health")
def health():
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def texts(n: int) -> list[str]:
    import csv

    with (DATA_ROOT / "trec" / "test.csv").open(encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return [rows[i % len(rows)] for i in range(n)]


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """Train the served model and export it (fp32 and int8 ONNX)."""
    run = work / "run"
    subprocess.run([sys.executable, "-m", "warmstart", "train", "--quiet",
                    f"data.name={DATA_ROOT / 'trec' / 'train.csv'}",
                    f"data.test={DATA_ROOT / 'trec' / 'test.csv'}", "data.limit=2000",
                    "model.name=minilm-l6", "model.pooling=pooler", "strategy.name=full",
                    "train.epochs=2",
                    f"output.dir={work}", "output.name=run"], check=True)
    for name, extra in (("onnx", []), ("int8", ["--quantize", "int8"])):
        subprocess.run([sys.executable, "-m", "warmstart", "export", str(run),
                        str(work / name), "--format", "onnx", *extra], check=True)
    return run, work / "onnx", work / "int8"


async def load(port: int, items: list[str], concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = list(reversed(items))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for text in items[:50]:  # warm-up, not measured
            await client.post("/predict", json={"inputs": [text]})

        async def worker() -> None:
            nonlocal errors
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                try:
                    r = await client.post("/predict", json={"inputs": [text]})
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(items), "errors": errors, "seconds": round(wall, 2),
            "throughput": round(len(items) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1)}


def serve_and_load(argv: list[str], items: list[str], concurrency: int, port: int) -> dict:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
                                "OMP_NUM_THREADS", "2")})
    try:
        deadline = time.time() + 180
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    tail = proc.stderr.read().decode()[-800:]
                    raise SystemExit(f"server did not start: {tail}") from None
                time.sleep(0.5)
        return asyncio.run(load(port, items, concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def accuracy(model: Path) -> float:
    done = subprocess.run([sys.executable, "-m", "warmstart", "evaluate", str(model),
                           "--data", str(DATA_ROOT / "trec" / "test.csv")],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split("accuracy ", 1)[1].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    items = texts(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        run, onnx, int8 = prepare(Path(tmp))
        anchor = Path(tmp) / "anchor.py"
        anchor.write_text(ANCHOR, encoding="utf-8")
        sides = {
            "anchor (pipeline per request)": lambda p: [sys.executable, str(anchor),
                                                        str(run / "model"), str(p)],
            "warmstart torch": lambda p: [sys.executable, "-m", "warmstart", "serve", str(run),
                                          "--port", str(p)],
            "warmstart onnx fp32": lambda p: [sys.executable, "-m", "warmstart", "serve",
                                              str(onnx), "--port", str(p), "--backend", "onnx"],
            "warmstart onnx int8": lambda p: [sys.executable, "-m", "warmstart", "serve",
                                              str(int8), "--port", str(p), "--backend", "onnx"],
        }
        results = {"load_before": os.getloadavg()[0], "when": time.strftime("%Y-%m-%d %H:%M"),
                   "concurrency": args.concurrency}
        for name, argv in sides.items():
            port = free_port()
            results[name] = serve_and_load(argv(port), items, args.concurrency, port)
            print(name, results[name], flush=True)
        results["accuracy"] = {"torch": accuracy(run), "onnx fp32": accuracy(onnx),
                               "onnx int8": accuracy(int8)}
        results["export_int8"] = json.loads((int8 / "export.json").read_text())
        results["load_after"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
