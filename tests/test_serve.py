"""`warmstart serve`: the HTTP API end to end on a tiny model, micro-batching, bad input."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_rows, write_csv
from fastapi.testclient import TestClient

from warmstart.cli import main
from warmstart.errors import WarmstartError
from warmstart.ship.predict import predict
from warmstart.ship.serve import Batcher, Limits, load_served, make_app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    data = write_csv(tmp / "d.csv", make_rows(12))
    assert main(["train", "model.name=tiny-bert", f"data.name={data}", "train.epochs=1",
                 f"output.dir={tmp}", "output.name=r", "log.quiet=true"]) == 0
    return tmp / "r"


@pytest.fixture(scope="module")
def client(run):
    with TestClient(make_app(load_served(run), Limits(max_items=8, max_text_chars=200))) as c:
        yield c


def test_predict_health_and_metadata(run, client):
    texts = ["match goal team", "bread soup recipe"]
    got = client.post("/predict", json={"inputs": texts})
    assert got.status_code == 200
    served, direct = got.json()["predictions"], predict(run, texts)
    assert [r["label"] for r in served] == [r["label"] for r in direct]
    for a, b in zip(served, direct):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    meta = client.get("/metadata").json()
    assert meta["labels"] == ["food", "sport", "tech"] and meta["task"] == "classification"
    assert meta["strategy"] == "full" and meta["backend"] == "torch"
    assert client.get("/health").json()["status"] == "ok"
    assert "/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"inputs": []}, 422, "inputs"),
    ({"inputs": ["x" * 201]}, 422, "inputs.0"),
    ({"inputs": ["a"] * 9}, 422, "inputs"),
    ({"inputs": [{"image": "aGVsbG8="}]}, 422, "reads text"),
    ({"inputs": [{"text": "a", "text_pair": "b"}]}, 422, "single texts"),
    ({"inputs": ["   "]}, 422, "empty"),
    ({"inputs": "not a list"}, 422, "inputs"),
    ({"texts": ["a"]}, 422, ""),
])
def test_bad_input_is_a_4xx_with_one_line(client, body, status, says):
    got = client.post("/predict", json=body)
    assert got.status_code == status
    detail = got.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and says in detail


def test_malformed_json_and_oversized_bodies_are_4xx(client):
    assert client.post("/predict", content=b"{not json",
                       headers={"content-type": "application/json"}).status_code == 422
    big = b'{"inputs": ["' + b"a" * 2_100_000 + b'"]}'
    assert client.post("/predict", content=big,
                       headers={"content-type": "application/json"}).status_code == 413


def test_concurrent_requests_share_model_calls():
    calls: list[int] = []

    def model(items):
        calls.append(len(items))
        return [{"n": x} for x in items]

    async def go():
        batcher = Batcher(model, max_batch=16, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(*[batcher.submit([i]) for i in range(20)])
        await batcher.stop()
        return results

    results = asyncio.run(go())
    assert [r[0]["n"] for r in results] == list(range(20))  # each gets its own answer
    assert sum(calls) == 20 and max(calls) == 16 and len(calls) == 2


def test_onnx_backend_needs_an_export(run):
    with pytest.raises(WarmstartError, match="--format onnx"):
        load_served(run, backend="onnx")


def test_no_request_makes_a_500(run):
    """schemathesis generates requests from the OpenAPI schema (valid and not): none is a 500."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app = make_app(load_served(run), Limits(max_items=4, max_text_chars=100))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            assert response.status_code < 500, (case.body, response.text)

        check()
        checked += 1
    assert checked == 3  # /predict, /health, /metadata
