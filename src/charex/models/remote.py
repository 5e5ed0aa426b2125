"""Remote suspects over the Open Inference Protocol (v2 REST: KServe, NVIDIA Triton, MLServer).

``RemoteModel(url)`` reads the model's metadata (``GET {url}``), then answers batches of fingerprint images
with ``POST {url}/infer`` in the protocol's JSON ``data`` form. How images are sent is configurable and
recorded: datatype ``FP32`` (pixels in [0, 1], charex's convention, by default) or ``UINT8`` (0-255), layout
NCHW or NHWC (by default what the metadata's input shape declares). The first output is read as logits or
probabilities (argmax) or, when it is an integer vector, as labels.

Production behaviour: a timeout per request, retries with exponential backoff on 429/502/503/504 and
connection errors, a batch-size limit, an optional auth header whose value comes from an environment
variable (never from the command line, never logged), a query budget, an audit file (JSON lines: time,
example index, label) from which any verdict can be recomputed offline with ``--answers``.

:func:`charex.judge.query.judge_remote` asks it a kit's queries sequentially: it stops as soon as the verdict can no
longer change (each query shows the other side one of your secret examples) and reports how many it sent.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit
from typing import Any, Callable

import numpy as np

from ..errors import CharexError

RETRY_STATUS = (429, 502, 503, 504)
MAX_RESPONSE_BYTES = 64 * 2 ** 20  # an answer larger than this is refused (a batch of 32 x 1000 scores is ~1 MB)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit."""
    u = urlsplit(url)
    try:
        port = u.port
    except ValueError:
        port = -1  # a malformed port never equals a real one
    return u.scheme.lower(), (u.hostname or "").lower(), port or {"http": 80, "https": 443}.get(u.scheme.lower())


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only for GET (metadata) and only to the same scheme, host and port; refuses the rest.

    urllib's own handler re-sends every header, Authorization included, to wherever a 301/302/303 points, and
    turns a POST into a GET: a suspect's operator could collect the verifier's token on another host.
    """

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if req.get_method() != "GET":
            raise CharexError(f"{req.full_url}: answered an inference request with a redirect ({code}) to "
                              f"{newurl!r}; charex does not follow redirects of inference requests")
        if _origin(newurl) != _origin(req.full_url):
            raise CharexError(f"{req.full_url}: redirect ({code}) to another scheme, host or port ({newurl!r}) "
                              "refused: credentials and queries stay with the URL you gave")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RemoteModel:
    """A model served over the Open Inference Protocol v2 (REST), answering labels for uint8 images.

    Args:
        url: ``http://HOST:PORT/v2/models/NAME`` (optionally ``/versions/V``).
        datatype: ``FP32`` (default) or ``UINT8`` (0-255 integers).
        scale: FP32 pixel scale: 1 (pixels in [0, 1], charex's convention, default) or 255.
        layout: ``nchw``, ``nhwc`` or None (from the metadata's declared input shape).
        batch_size: images per request at most.
        timeout: seconds per request. retries: further attempts on 429/5xx/connection errors, with
            backoff ``backoff * 2**attempt`` seconds.
        auth_env: name of an environment variable holding the ``Authorization`` header value; it is sent
            only to the URL's scheme, host and port (redirects elsewhere are refused).
        max_response_bytes: an answer larger than this is an error.
    """

    def __init__(self, url: str, *, datatype: str = "FP32", layout: str | None = None, scale: float = 1.0,
                 batch_size: int = 32,
                 timeout: float = 30.0, retries: int = 4, backoff: float = 0.5, auth_env: str | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, sleep: Callable[[float], None] = time.sleep) -> None:
        if not url.startswith(("http://", "https://")) or "/v2/models/" not in url:
            raise CharexError(f"remote model URL must look like http://HOST:PORT/v2/models/NAME, got {url!r}")
        if datatype not in ("FP32", "UINT8"):
            raise CharexError(f"datatype must be FP32 or UINT8, got {datatype!r}")
        if layout not in (None, "nchw", "nhwc"):
            raise CharexError(f"layout must be nchw or nhwc, got {layout!r}")
        if batch_size < 1:
            raise CharexError(f"batch size must be >= 1, got {batch_size}")
        if scale not in (1.0, 255.0) or (datatype == "UINT8" and scale != 1.0):
            raise CharexError(f"scale must be 1 ([0, 1] floats) or 255 (0-255 floats) with FP32, got {scale}")
        self.url = url.rstrip("/")
        self.datatype, self.layout, self.scale, self.batch_size = datatype, layout, float(scale), batch_size
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.max_response_bytes = int(max_response_bytes)
        self._opener = urllib.request.build_opener(_SameOriginRedirects())
        self.num_classes: int | None = None
        self.headers = {"Content-Type": "application/json"}
        if auth_env:
            value = os.environ.get(auth_env)
            if not value:
                raise CharexError(f"environment variable {auth_env} (the auth header) is not set")
            self.headers["Authorization"] = value
        self.input_name: str | None = None
        self.sent = 0

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read(self.max_response_bytes + 1)
                if len(raw) > self.max_response_bytes:
                    raise CharexError(f"{url} answered with more than {self.max_response_bytes} bytes; refused")
                try:
                    out = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise CharexError(f"{url} answered with something that is not JSON: {raw[:80]!r}") from None
                except RecursionError:
                    raise CharexError(f"{url} answered with JSON nested too deeply") from None
                if not isinstance(out, dict):
                    raise CharexError(f"{url} answered with JSON that is not an object")
                return out
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code not in RETRY_STATUS:
                    detail = e.read()[:200].decode(errors="replace")
                    raise CharexError(f"{url}: {last}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < self.retries:
                self.sleep(self.backoff * 2 ** attempt)
        raise CharexError(f"{url}: no answer after {self.retries + 1} attempts ({last})")

    def check(self, shape: tuple[int, int, int], num_classes: int | None = None) -> dict[str, Any]:
        """Read the metadata; pick the input and layout; fail early when the declared input shape or the
        declared class count (the first output's last dimension) does not fit the fingerprint."""
        meta = self._request("GET", self.url)
        inputs = meta.get("inputs")
        if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
            raise CharexError(f"{self.url}: the metadata declares no inputs")
        inp = inputs[0]
        name = inp.get("name")
        if not isinstance(name, str) or not name:
            raise CharexError(f"{self.url}: the metadata's first input has no name")
        self.input_name = name
        declared = _dims(inp.get("shape"), f"{self.url}: input {name!r}")
        c, h, w = shape
        if self.layout is None:
            self.layout = "nhwc" if declared[-3:] == [h, w, c] else "nchw"
        want = [c, h, w] if self.layout == "nchw" else [h, w, c]
        if len(declared) != 4 or any(d not in (-1, x) for d, x in zip(declared[1:], want)):
            raise CharexError(f"{self.url}: input {self.input_name!r} is declared {declared}; the fingerprint's "
                              f"images are {self.layout.upper()} {want} (choose --remote-layout or another model)")
        if declared[0] >= 1:
            self.batch_size = min(self.batch_size, declared[0])
        self.num_classes = num_classes
        outputs = meta.get("outputs")
        if num_classes is not None and isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) \
                and outputs[0].get("shape") is not None:
            out = _dims(outputs[0]["shape"], f"{self.url}: output {outputs[0].get('name')!r}")
            if len(out) >= 2 and out[-1] not in (-1, 1, num_classes):
                raise CharexError(f"{self.url}: output {outputs[0].get('name')!r} is declared {out}: "
                                  f"{out[-1]} classes, but the fingerprint has {num_classes}")
        return meta

    def labels(self, images: np.ndarray) -> list[int]:
        """Labels for an N x C x H x W uint8 batch (split into requests of ``batch_size``)."""
        if self.input_name is None:
            self.check(tuple(images.shape[1:]))  # type: ignore[arg-type]
        out: list[int] = []
        for i in range(0, len(images), self.batch_size):
            part = images[i:i + self.batch_size]
            x = part.transpose(0, 2, 3, 1) if self.layout == "nhwc" else part
            if self.datatype == "FP32":
                data = (x.astype(np.float32) * (self.scale / 255)).ravel().tolist()
            else:
                data = x.ravel().tolist()
            body = {"inputs": [{"name": self.input_name, "shape": list(x.shape), "datatype": self.datatype,
                                "data": data}]}
            resp = self._request("POST", f"{self.url}/infer", body)
            out += _labels_from(resp, len(part), self.url, self.num_classes)
            self.sent += len(part)
        return out


def _dims(shape: Any, what: str) -> list[int]:
    """A declared tensor shape: a list of integers (-1 for any size)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1
                                              for d in shape):
        raise CharexError(f"{what} has no valid declared shape (a list of integers, -1 for any): {shape!r:.80}")
    return shape


def _labels_from(resp: dict[str, Any], n: int, url: str, num_classes: int | None = None) -> list[int]:
    """The n labels in an inference answer: the first output as N class indices or N x C scores (argmax).

    With ``num_classes`` the answer must have exactly that many scores per image, or labels below it.
    """
    outputs = resp.get("outputs")
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict) or "data" not in outputs[0]:
        raise CharexError(f"{url}: the answer holds no outputs with data")
    o = outputs[0]
    shape = o.get("shape")
    try:
        dims = [n, -1] if shape is None else [int(s) for s in _dims(shape, f"{url}: output")]
        arr = np.asarray(o["data"], dtype=np.float64).reshape(dims)
    except (ValueError, TypeError, OverflowError) as e:
        raise CharexError(f"{url}: output {o.get('name')!r:.40} does not have its declared shape: "
                          f"{str(e)[:120]}") from None
    if arr.ndim == 0 or arr.shape[0] != n:
        raise CharexError(f"{url}: asked {n} images, got {arr.shape[0] if arr.ndim else 'no'} answers")
    if not np.isfinite(arr).all():
        raise CharexError(f"{url}: the answer holds NaN or inf values")
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):  # labels
        labels = arr.reshape(n)
        if (labels != np.round(labels)).any() or labels.min() < 0 or \
                (num_classes is not None and labels.max() >= num_classes):
            raise CharexError(f"{url}: labels must be class indices in [0, {num_classes or 'C'}), got "
                              f"{labels[:5].tolist()}...")
        return [int(v) for v in labels]
    if arr.ndim != 2 or arr.shape[1] < 2 or (num_classes is not None and arr.shape[1] != num_classes):
        raise CharexError(f"{url}: the answer has shape {list(arr.shape)}; expected {n} x {num_classes or 'C'} "
                          "scores or N labels")
    return [int(v) for v in arr.argmax(1)]
