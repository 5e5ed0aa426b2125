"""Remote suspects over the Open Inference Protocol v2: a real MLServer on loopback, and a misbehaving endpoint."""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from charex import verify
from charex.cli import main
from charex.errors import CharexError
from charex.models import save_model
from charex.judge.query import verify_remote
from charex.models.remote import RemoteModel
from http_stub import JsonHandler

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlserver(fp_and_models):
    """A real MLServer (the protocol's reference implementation) serving a lightly pruned copy and an
    independent model."""
    exe = shutil.which("mlserver", path=str(Path(sys.executable).parent)) or shutil.which("mlserver")
    if exe is None:
        pytest.skip("mlserver is not installed (pip install 'charex[remote-test]')")
    d, _, models = fp_and_models
    root = d / "serve"
    root.mkdir()
    shutil.copy(HERE / "charex_runtime.py", root / "charex_runtime.py")
    for name, m in models.items():
        (root / name).mkdir()
        save_model(m, root / name / "model.safetensors")
        (root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "charex_runtime.CharexRuntime",
            "parameters": {"uri": str(root / name / "model.safetensors")},
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}))
    port = free_port()
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "host": "127.0.0.1"}))
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([exe, "start", str(root)], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{base}/v2/models/other/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("MLServer did not come up: " + proc.stdout.read(4000).decode(errors="replace")
                        if proc.poll() is not None else "MLServer did not come up in 60 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_mlserver_verdicts_equal_local_ones(mlserver, fp_and_models, capsys) -> None:
    d, cal, models = fp_and_models
    for name, m in models.items():
        want = verify(cal, {name: m})[0]
        got = verify_remote(cal, RemoteModel(f"{mlserver}/v2/models/{name}", batch_size=16), sequential=False)
        assert (got.matches, got.n, got.decision) == (want.matches, want.n, want.decision)
        assert got.extra["sent"] == 40 and got.extra["layout"] == "nchw"
    # sequential testing: a clear case stops early, with the same decision, and says how many were sent
    assert verify(cal, {"pruned": models["pruned"]})[0].decision == "derived"
    v = verify_remote(cal, RemoteModel(f"{mlserver}/v2/models/pruned", batch_size=4))
    assert v.decision == "derived" and v.extra["stopped_early"] and v.extra["sent"] < 40
    audit = d / "audit.jsonl"
    capsys.readouterr()
    rc = main(["verify", str(d / "cal.safetensors"), f"{mlserver}/v2/models/other", "--audit", str(audit),
               "--all-queries", "--json"])
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert rc == (0 if out["decision"] == "derived" else 1) and out["sent"] == 40
    # the audit file recomputes the verdict offline
    assert main(["verify", str(d / "cal.safetensors"), "--answers", str(audit), "--json"]) == rc
    again = json.loads(capsys.readouterr().out)["results"][0]
    assert again["matches"] == out["matches"] and again["p_value"] == pytest.approx(out["p_value"])
    assert main(["verify", str(d / "cal.safetensors"), f"{mlserver}/v2/models/other", "--audit", str(audit)]) == 2


class Misbehaving(JsonHandler):
    """Answers per ``mode``: wrong-shape metadata, 500s, 503s then success, garbage JSON, slow answers."""

    mode = "ok"
    calls = 0

    def do_GET(self) -> None:
        shape = [-1, 1, 8, 8] if Misbehaving.mode == "shape" else [-1, 32, 32, 3]
        self._send(200, json.dumps({"name": "m", "inputs": [{"name": "img", "datatype": "UINT8",
                                                                  "shape": shape}]}).encode())

    def do_POST(self) -> None:
        Misbehaving.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = body["inputs"][0]["shape"][0]
        Misbehaving.last = body
        if Misbehaving.mode == "500" or (Misbehaving.mode == "fail-later" and Misbehaving.calls > 1):
            return self._send(500, b'{"error": "boom"}')
        if Misbehaving.mode == "503" and Misbehaving.calls <= 2:
            return self._send(503, b'{"error": "busy"}')
        if Misbehaving.mode == "garbage":
            return self._send(200, b"<html>not json")
        if Misbehaving.mode == "slow":
            time.sleep(0.5)
        if Misbehaving.mode == "auth" and self.headers.get("Authorization") != "Bearer s3cret":
            return self._send(401, b'{"error": "no"}')
        self._send(200, json.dumps({"outputs": [{"name": "label", "datatype": "INT64", "shape": [n],
                                                 "data": [3] * n}]}).encode())


@pytest.fixture
def endpoint():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Misbehaving.calls = 0
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
    srv.shutdown()


def remote(url, **kw):
    return RemoteModel(url, datatype="UINT8", backoff=0.01, **kw)


def test_labels_nhwc_uint8_and_retries(endpoint, fp_and_models, monkeypatch) -> None:
    _, cal, _ = fp_and_models
    Misbehaving.mode = "503"
    v = verify_remote(cal, remote(endpoint, batch_size=64), sequential=False)
    assert Misbehaving.calls == 3 and v.n == 40 and v.extra["layout"] == "nhwc"  # two 503s, then an answer
    inp = Misbehaving.last["inputs"][0]
    assert inp["shape"] == [40, 32, 32, 3] and inp["datatype"] == "UINT8" and max(inp["data"]) <= 255
    assert v.matches == int((cal.targets == 3).sum())  # labels output read as labels
    Misbehaving.mode = "auth"
    monkeypatch.setenv("SUSPECT_TOKEN", "Bearer s3cret")
    assert verify_remote(cal, remote(endpoint, auth_env="SUSPECT_TOKEN"), max_queries=10).n == 10


@pytest.mark.parametrize("mode, message", [("shape", "is declared [-1, 1, 8, 8]"), ("500", "HTTP 500"),
                                           ("garbage", "not JSON"), ("slow", "no answer after 2 attempts"),
                                           ("auth", "HTTP 401")])
def test_misbehaving_endpoint_errors(endpoint, fp_and_models, tmp_path, capsys, mode, message) -> None:
    d, cal, _ = fp_and_models
    Misbehaving.mode = mode
    with pytest.raises(CharexError, match=message.replace("[", r"\[")):
        verify_remote(cal, remote(endpoint, timeout=0.2, retries=1))
    audit = tmp_path / "audit.jsonl"
    rc = main(["verify", str(d / "cal.safetensors"), endpoint, "--remote-datatype", "UINT8", "--timeout", "0.2",
               "--retries", "1", "--audit", str(audit)])
    assert rc == 2 and message.split("[")[0].strip() in capsys.readouterr().err
    if mode != "shape":
        assert not audit.exists() or audit.read_text() == ""


def test_bad_remote_settings() -> None:
    with pytest.raises(CharexError, match="must look like"):
        RemoteModel("http://host/predict")
    with pytest.raises(CharexError, match="is not set"):
        RemoteModel("http://h:1/v2/models/m", auth_env="CHAREX_NO_SUCH_VARIABLE")


def test_failed_run_leaves_a_partial_audit_not_a_whole_one(endpoint, fp_and_models, tmp_path, capsys) -> None:
    d, _, _ = fp_and_models
    Misbehaving.mode = "fail-later"
    audit = tmp_path / "audit.jsonl"
    rc = main(["verify", str(d / "cal.safetensors"), endpoint, "--remote-datatype", "UINT8", "--batch-size", "8",
               "--retries", "0", "--audit", str(audit)])
    err = capsys.readouterr().err
    assert rc == 2 and "HTTP 500" in err and "8 answers received before the failure" in err
    assert not audit.exists() and len((tmp_path / "audit.jsonl.partial").read_text().splitlines()) == 8
