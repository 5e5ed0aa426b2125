"""Fuzzing what a suspect's Open Inference Protocol endpoint answers: metadata and inference responses.

A stub server answers each generated case with valid or mutated JSON (shapes, datatypes, missing or extra fields,
wrong lengths and class counts, huge numbers, NaN, non-UTF-8, HTTP errors). The label it gives an image is a
function of the image's pixels, so the expected match count of a valid answer is known offline.
"""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from http_stub import JsonHandler

from .conftest import check

CLASSES = 10


def label_of(pixels: np.ndarray) -> int:
    return int(pixels.astype(np.int64).sum()) % CLASSES


VALID_META = {"name": "m", "platform": "stub", "inputs": [{"name": "img", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}],
              "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, CLASSES]}]}

# (name, mutation of the metadata, still valid?)
META_MUTATIONS = [
    ("as is", lambda m: m, True),
    ("extra fields", lambda m: {**m, "versions": ["1"], "x": {"y": [1, None]}}, True),
    ("no outputs", lambda m: {k: v for k, v in m.items() if k != "outputs"}, True),
    ("any size", lambda m: {**m, "inputs": [{**m["inputs"][0], "shape": [-1, -1, -1, -1]}]}, True),
    ("no inputs", lambda m: {k: v for k, v in m.items() if k != "inputs"}, False),
    ("inputs not a list", lambda m: {**m, "inputs": {"name": "img"}}, False),
    ("input not an object", lambda m: {**m, "inputs": ["img"]}, False),
    ("no input name", lambda m: {**m, "inputs": [{"shape": [-1, 32, 32, 3]}]}, False),
    ("input name not text", lambda m: {**m, "inputs": [{**m["inputs"][0], "name": 7}]}, False),
    ("wrong input shape", lambda m: {**m, "inputs": [{**m["inputs"][0], "shape": [-1, 1, 8, 8]}]}, False),
    ("shape of strings", lambda m: {**m, "inputs": [{**m["inputs"][0], "shape": ["-1", "32", "32", "3"]}]}, False),
    ("shape of bools", lambda m: {**m, "inputs": [{**m["inputs"][0], "shape": [True, 32, 32, 3]}]}, False),
    ("shape not a list", lambda m: {**m, "inputs": [{**m["inputs"][0], "shape": "NHWC"}]}, False),
    ("7 classes declared", lambda m: {**m, "outputs": [{**m["outputs"][0], "shape": [-1, 7]}]}, False),
    ("not an object", lambda m: [m], False),
]


KINDS = ["valid"] * 4 + ["no outputs", "outputs not a list", "no data", "short", "long", "7 classes", "label 10",
                         "label -1", "label 2.5", "NaN", "1e400", "10**400", "strings", "nested", "bad shape",
                         "shape of text", "non-UTF-8", "not JSON", "HTTP 400", "HTTP 500", "empty", "extra fields",
                         "0 classes"]
NOT_JSON = [b"<html>oops</html>", b"", b"{", b"[" * 100_000, b"null", b"[]", b'"x"']

# what to answer to one request, drawn in the test's thread (the server's thread builds it for the request)
SPECS = st.fixed_dictionaries({"form": st.sampled_from(["labels", "scores", "scores-no-shape", "labels-2d"]),
                               "kind": st.sampled_from(KINDS), "seed": st.integers(0, 2**32 - 1),
                               "drop_shape": st.booleans(), "not_json": st.sampled_from(NOT_JSON)})


def response(spec: dict, n: int, labels: list[int]) -> tuple[bytes, int, bool]:
    """(body, HTTP status, still valid?) for an inference request of n images whose right labels are ``labels``."""
    form, kind = spec["form"], spec["kind"]
    rng = np.random.default_rng(spec["seed"])
    if form.startswith("scores"):
        scores = rng.random((n, CLASSES)) * 0.5
        scores[np.arange(n), labels] = 1.0
        out = {"name": "scores", "datatype": "FP32", "data": scores.ravel().tolist()}
        if form == "scores":
            out["shape"] = [n, CLASSES]
    else:
        out = {"name": "label", "datatype": "INT64", "shape": [n] if form == "labels" else [n, 1], "data": list(labels)}
    body = {"model_name": "m", "outputs": [out]}
    valid = kind in ("valid", "extra fields")
    if kind == "extra fields":
        body["parameters"] = {"x": 1}
        out["parameters"] = {"content_type": "np"}
    elif kind == "no outputs":
        body.pop("outputs")
    elif kind == "outputs not a list":
        body["outputs"] = out
    elif kind == "no data":
        out.pop("data")
    elif kind in ("short", "long"):
        out["data"] = out["data"][:-1] if kind == "short" else out["data"] + out["data"][:1]
        out.pop("shape", None) if spec["drop_shape"] else None
    elif kind == "7 classes":
        out.update(shape=[n, 7], data=rng.random(n * 7).tolist())
    elif kind == "0 classes":
        out.update(shape=[n, 0], data=[])
    elif kind in ("label 10", "label -1", "label 2.5"):
        out.update(shape=[n], data=[{"label 10": 10, "label -1": -1, "label 2.5": 2.5}[kind]] * n)
    elif kind == "strings":
        out["data"] = [str(v) + "x" for v in out["data"]]
    elif kind == "nested":
        out["data"] = [[[v]] for v in out["data"]][:1] + out["data"][1:]
    elif kind == "bad shape":
        out["shape"] = [n + 1, 3]
    elif kind == "shape of text":
        out["shape"] = ["n", "c"]
    raw = json.dumps(body).encode()
    if kind == "NaN":
        raw = raw.replace(b"[", b"[NaN, ", 1) if form == "labels" else raw.replace(b'"data": [', b'"data": [NaN, ', 1)
        raw = raw.replace(b'"shape": [', b'"shapeX": [')  # one more value than images: also a length error
    elif kind == "1e400":
        raw = raw.replace(b'"data": [', b'"data": [1e400, ', 1)
    elif kind == "10**400":
        raw = raw.replace(b'"data": [', b'"data": [' + b"9" * 400 + b", ", 1)
    elif kind == "non-UTF-8":
        raw = b'{"outputs": "\xff\xfe\xfd"}'
    elif kind == "not JSON":
        raw = spec["not_json"]
    elif kind == "empty":
        raw = b"{}"
    status = {"HTTP 400": 400, "HTTP 500": 500}.get(kind, 200)
    return raw, status, valid


class Stub(JsonHandler):
    meta: bytes = b""
    plan = None  # callable(n, labels) -> (raw, status)

    def do_GET(self) -> None:
        self._send(200, Stub.meta)

    def do_POST(self) -> None:
        inp = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"][0]
        x = np.asarray(inp["data"], dtype=np.int64).reshape(inp["shape"])
        raw, status = Stub.plan(len(x), [label_of(img) for img in x])
        self._send(status, raw)


@pytest.fixture(scope="module")
def stub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
    srv.shutdown()


def expected_matches(fp) -> int:
    x = fp.images.permute(0, 2, 3, 1).numpy()  # NHWC, as sent
    return sum(label_of(img) == int(t) for img, t in zip(x, fp.targets))


SEVEN = {"form": "scores", "kind": "7 classes", "seed": 0, "drop_shape": False, "not_json": b""}


@given(meta=st.sampled_from(META_MUTATIONS), specs=st.lists(SPECS, min_size=3, max_size=3),
       batch=st.sampled_from([5, 12, 32]))
@example(meta=META_MUTATIONS[0], specs=[SEVEN] * 3, batch=12)  # 10 outputs declared, 7 answered: was a verdict
def test_remote_endpoint(world, stub, meta, specs, batch) -> None:
    name, mutate, meta_ok = meta
    Stub.meta = json.dumps(mutate(json.loads(json.dumps(VALID_META)))).encode()
    valid = {"all": meta_ok}
    todo = list(specs)  # one per request (12 examples: at most 3 requests)

    def plan(n, labels):
        raw, status, ok = response(todo.pop(0), n, labels)
        valid["all"] &= ok
        return raw, status

    Stub.plan = plan
    rc, out = check(["verify", str(world["cal"]), stub, "--remote-datatype", "UINT8", "--retries", "0",
                     "--timeout", "5", "--batch-size", str(batch), "--all-queries", "--json"])
    if not valid["all"]:
        assert rc == 2, (name, rc, out[:200])
    else:
        assert rc in (0, 1)
        r = json.loads(out)["results"][0]
        assert r["n"] == world["fp"].n and r["matches"] == expected_matches(world["fp"])
