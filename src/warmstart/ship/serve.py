"""`warmstart serve`: a fine-tuned model behind HTTP (FastAPI + uvicorn), with micro-batching.

Concurrent requests are gathered into one model call: a request's items wait at most
`max_wait_ms` for others to join, up to `max_batch` items, and the batch runs in a worker
thread, so the event loop keeps accepting requests while the model works. On a CPU a batch
of 32 costs far less than 32 single calls, which is where the throughput comes from (the
usual tutorial server calls a `pipeline` once per request).

Bad input is a 4xx with a one-line reason, never a 500: JSON and types are checked by the
request models, limits (body size, items per request, text length, image bytes and pixels)
before any work; no file path is read from a request; it binds to loopback unless told.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at
# runtime, and the request models are local to `make_app` (they carry the limits).
import asyncio
import base64
import binascii
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.errors import WarmstartError
from warmstart.models.base import read_model_file
from warmstart.ship.predict import load_run, logits_for
from warmstart.summary import read_summary
from warmstart.tasks import Task


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_body_bytes: int = 2_000_000
    max_items: int = 64
    max_text_chars: int = 20_000
    max_image_bytes: int = 1_000_000
    max_image_pixels: int = 4096 * 4096


@dataclass
class Served:
    """The model a server answers with: a predict function over a list of inputs, its task,
    and what `/metadata` says."""

    predict: Callable[[list[Any]], list[dict[str, Any]]]
    task: Task
    kind: str
    pairs: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def load_served(path: str | Path, backend: str = "torch") -> Served:
    """A run (torch), or an ONNX export (onnx) ready to serve.

    Raises:
        WarmstartError: the folder is not a finished run or export, or the backend does not
            match it (onnx needs `warmstart export --format onnx`).
    """
    path = Path(path)
    model_dir = path / "model" if (path / "model").is_dir() else path
    saved = read_model_file(model_dir) if model_dir.is_dir() else {}
    source = saved.get("source")
    if backend == "onnx" and source != "onnx":
        raise WarmstartError(f"--backend onnx needs an ONNX export; run `warmstart export "
                             f"{path} OUT --format onnx` and serve OUT")
    adapter, task, cfg = load_run(path)
    if backend == "torch" and source == "onnx":
        backend = "onnx"  # an export serves through onnxruntime whatever was asked
    pairs = bool(cfg.data.text_pair_column) or bool(saved.get("pairs"))
    meta: dict[str, Any] = {"task": task.type, "labels": task.label_names, "kind": adapter.kind,
                            "backend": backend, "base_model": adapter.name, "pairs": pairs}
    summary = path / "summary.json"
    if summary.is_file():
        s = read_summary(path)
        meta |= {"strategy": s.strategy, "metric": s.metric, "quality": s.headline,
                 "quality_split": s.quality_split}

    def predict(inputs: list[Any]) -> list[dict[str, Any]]:
        return task.predictions(logits_for(adapter, inputs, batch_size=64))

    return Served(predict, task, adapter.kind, meta["pairs"], meta)


class Batcher:
    """Gathers the items of concurrent requests into batched model calls."""

    def __init__(self, predict: Callable[[list[Any]], list[dict[str, Any]]],
                 max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batches = self.items = 0

    def start(self) -> None:
        """Start gathering on the running event loop (again, if it is a new loop: test
        clients run one per call)."""
        loop = asyncio.get_running_loop()
        if self.loop is loop and self.task is not None and not self.task.done():
            return
        self.loop, self.queue = loop, asyncio.Queue()
        self.task = loop.create_task(self._run(self.queue))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def submit(self, inputs: list[Any]) -> list[dict[str, Any]]:
        self.start()
        assert self.queue is not None and self.loop is not None
        futures = [self.loop.create_future() for _ in inputs]
        for item, future in zip(inputs, futures):
            self.queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            items = [item for item, _ in batch]
            try:
                rows = await loop.run_in_executor(None, self.predict, items)
            except Exception as e:  # the batch fails, the server does not
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)


def make_app(served: Served, limits: Limits | None = None, max_batch: int = 32,
             max_wait_ms: float = 5.0) -> Any:
    """The FastAPI app: POST /predict, GET /health, GET /metadata (and /docs, /openapi.json)."""
    from contextlib import asynccontextmanager
    from typing import Annotated

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    limits = limits or Limits()
    batcher = Batcher(served.predict, max_batch, max_wait_ms)

    class Pair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str = Field(min_length=1, max_length=limits.max_text_chars)
        text_pair: str = Field(min_length=1, max_length=limits.max_text_chars)

    class Image(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image: str = Field(min_length=1, description="base64 of a PNG/JPEG/... file")

    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_text_chars)]
    Item = Text | Pair | Image

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: list[Item] = Field(min_length=1, max_length=limits.max_items)  # type: ignore[valid-type]

    class PredictResponse(BaseModel):
        predictions: list[dict[str, Any]]

    @asynccontextmanager
    async def lifespan(_: Any):  # noqa: ANN202
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="warmstart serve", version="1", lifespan=lifespan)
    started = time.time()

    def bad(reason: str, status: int = 422) -> JSONResponse:
        return JSONResponse({"detail": reason}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return bad(f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > limits.max_body_bytes):
            return bad(f"request body over {limits.max_body_bytes} bytes", 413)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1),
                "batches": batcher.batches, "items": batcher.items}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return served.metadata

    @app.post("/predict", response_model=PredictResponse,
              responses={422: {"description": "invalid input"},
                         413: {"description": "body too large"}})
    async def predict(body: PredictRequest) -> Any:
        try:
            inputs = [_decode(item, served, limits) for item in body.inputs]
        except ValueError as e:
            return bad(str(e))
        try:
            return {"predictions": await batcher.submit(inputs)}
        except WarmstartError as e:
            return bad(str(e))

    return app


def _decode(item: Any, served: Served, limits: Limits) -> Any:
    """One request item as the model's input; ValueError (a 422) when it does not fit."""
    if served.kind == "image":
        if not hasattr(item, "image"):
            raise ValueError("this model reads images: send {\"image\": \"<base64>\"} items")
        return _image(item.image, limits)
    if hasattr(item, "image"):
        raise ValueError("this model reads text: send strings (or text pairs)")
    if served.pairs:
        if not hasattr(item, "text_pair"):
            raise ValueError("this model reads text pairs: send {\"text\": ..., "
                             "\"text_pair\": ...} items")
        return (item.text, item.text_pair)
    if hasattr(item, "text_pair"):
        raise ValueError("this model reads single texts: send strings")
    if not item.strip():
        raise ValueError("an input text is empty")
    if len(item) > limits.max_text_chars:
        raise ValueError(f"an input text is over {limits.max_text_chars} characters")
    return item


def _image(data: str, limits: Limits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_image_bytes * 4 // 3 + 4:
        raise ValueError(f"an image is over {limits.max_image_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > limits.max_image_pixels:
                raise ValueError(f"an image has over {limits.max_image_pixels} pixels")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ValueError("an image could not be decoded (send PNG, JPEG, ... as base64)") \
            from None


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
          max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
    """Serve until interrupted (uvicorn)."""
    import uvicorn

    app = make_app(load_served(path, backend), max_batch=max_batch, max_wait_ms=max_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning")
