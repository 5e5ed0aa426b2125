"""The remote client as a security boundary: redirects, the Authorization header, answer size and class count.

A suspect's operator controls everything the endpoint answers. These tests play that operator: a server on
127.0.0.1 that redirects, and a listener on a second loopback address (127.0.0.2) that records whatever reaches
it, so that "the token never leaves the URL's host" is checked on the wire, not in the client's code.
"""

import http.server
import json
import threading

import pytest

from charex.cli import main
from charex.errors import CharexError
from charex.judge.query import verify_remote
from charex.models.remote import RemoteModel
from http_stub import JsonHandler

TOKEN = "Bearer do-not-forward"


class Recorder(JsonHandler):
    """The other host: records every request with its headers and answers like a valid endpoint."""

    seen: list = []

    def _answer(self) -> None:
        Recorder.seen.append((self.command, self.path, dict(self.headers)))
        body = json.dumps({"name": "m", "inputs": [{"name": "img", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}],
                           "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]}).encode()
        self._send(200, body)

    do_GET = do_POST = _answer


class Operator(JsonHandler):
    """The suspect's endpoint, misbehaving per ``mode``."""

    mode = ""
    other = ""  # base URL of the recorder on 127.0.0.2
    classes = 10

    def _redirect(self, where: str) -> None:
        self._send(302 if "302" in Operator.mode else 307, b"", {"Location": where})

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if Operator.mode == "meta-redirect-foreign":
            return self._redirect(f"{Operator.other}{self.path}")
        if Operator.mode == "meta-redirect-scheme":
            return self._redirect(f"https://127.0.0.1:{port}{self.path}")
        if Operator.mode == "meta-redirect-same" and not self.path.endswith("/here"):
            return self._redirect(f"http://127.0.0.1:{port}{self.path}/here")
        outputs = [{"name": "scores", "datatype": "FP32", "shape": [-1, Operator.classes]}]
        self._send(200, json.dumps({"name": "m", "inputs": [{"name": "img", "datatype": "UINT8",
                                                             "shape": [-1, 32, 32, 3]}],
                                    "outputs": outputs}).encode())

    def do_POST(self) -> None:
        n = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"][0]["shape"][0]
        if Operator.mode.startswith("infer-redirect"):
            return self._redirect(f"{Operator.other}/v2/models/m/infer")
        if Operator.mode == "huge":
            return self._send(200, b'{"outputs": [{"name": "s", "data": [' + b"0," * 600_000 + b"0]}]}")
        width = 7 if Operator.mode == "answers-7" else Operator.classes
        self._send(200, json.dumps({"outputs": [{"name": "scores", "datatype": "FP32", "shape": [n, width],
                                                 "data": [1.0] + [0.0] * (n * width - 1)}]}).encode())


def serve(handler, host):
    srv = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def servers():
    try:
        other = serve(Recorder, "127.0.0.2")
    except OSError:
        pytest.skip("no second loopback address (127.0.0.2) on this machine")
    op = serve(Operator, "127.0.0.1")
    Recorder.seen = []
    Operator.other = f"http://127.0.0.2:{other.server_address[1]}"
    Operator.classes = 10
    yield f"http://127.0.0.1:{op.server_address[1]}/v2/models/m"
    op.shutdown()
    other.shutdown()


@pytest.mark.parametrize("mode", ["infer-redirect-302", "infer-redirect-307", "meta-redirect-foreign"])
def test_authorization_never_reaches_another_host(servers, fp_and_models, monkeypatch, capsys, mode) -> None:
    d, _, _ = fp_and_models
    Operator.mode = mode
    monkeypatch.setenv("SUSPECT_TOKEN", TOKEN)
    rc = main(["verify", str(d / "cal.safetensors"), servers, "--remote-datatype", "UINT8", "--retries", "0",
               "--auth-env", "SUSPECT_TOKEN"])
    err = capsys.readouterr().err
    assert rc == 2 and "redirect" in err and TOKEN not in err
    assert Recorder.seen == []  # nothing at all reached 127.0.0.2: no token, no query


def test_scheme_change_refused_same_origin_metadata_redirect_followed(servers, fp_and_models, monkeypatch) -> None:
    _, cal, _ = fp_and_models
    Operator.mode = "meta-redirect-scheme"
    with pytest.raises(CharexError, match="another scheme, host or port"):
        verify_remote(cal, RemoteModel(servers, datatype="UINT8", retries=0))
    Operator.mode = "meta-redirect-same"  # GET metadata moved on the same host: followed
    monkeypatch.setenv("SUSPECT_TOKEN", TOKEN)
    v = verify_remote(cal, RemoteModel(servers, datatype="UINT8", retries=0, auth_env="SUSPECT_TOKEN"),
                      sequential=False)
    assert v.n == cal.n and Recorder.seen == []


def test_answer_class_count_must_match_the_fingerprint(servers, fp_and_models, capsys) -> None:
    d, cal, _ = fp_and_models
    Operator.mode = "answers-7"  # metadata says 10 classes, answers carry 7 scores
    rc = main(["verify", str(d / "cal.safetensors"), servers, "--remote-datatype", "UINT8", "--retries", "0"])
    assert rc == 2 and "expected" in capsys.readouterr().err
    Operator.mode, Operator.classes = "", 7  # metadata and answers agree on 7, the fingerprint has 10
    with pytest.raises(CharexError, match="7 classes, but the fingerprint has 10"):
        verify_remote(cal, RemoteModel(servers, datatype="UINT8", retries=0))


def test_answer_size_is_limited(servers, fp_and_models) -> None:
    _, cal, _ = fp_and_models
    Operator.mode = "huge"
    with pytest.raises(CharexError, match="more than 100000 bytes"):
        verify_remote(cal, RemoteModel(servers, datatype="UINT8", retries=0, max_response_bytes=100_000))
