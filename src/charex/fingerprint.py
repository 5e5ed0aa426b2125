"""FingerprintSet: the characteristic examples, their targets and provenance, stored as safetensors.

File format (see docs/format.md): tensors ``images`` (uint8 N x C x H x W, or float32 for
raw research sets) and ``targets`` (int64 N); safetensors metadata ``charex`` (canonical
JSON of everything else) and ``digest`` (SHA-256 over the canonical JSON and the raw
tensor bytes). ``load`` recomputes the digest and refuses a file that does not match.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write_bytes
from .errors import FingerprintFileError
from .types import GenerationConfig

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FingerprintSet:
    """Characteristic examples of one base model.

    Attributes:
        images: N x C x H x W; uint8 pixels (quantized, what is saved and sent to APIs) or
            float32 in [0, 1] (``quantize=False``: the raw trajectory end point).
        targets: N int64 target labels.
        config: the effective :class:`GenerationConfig`.
        meta: provenance: ``input_shape``, ``num_classes``, ``normalization``,
            ``base_model_digest``, ``charex_version``, ``created``, ``base_match_rate``, ...
        calibration: the calibration block written by :func:`charex.calibrate`, or None.

    Example:
        >>> fp = FingerprintSet.load("fp.safetensors")  # doctest: +SKIP
        >>> fp.images.shape, fp.targets.shape  # doctest: +SKIP
    """

    images: torch.Tensor
    targets: torch.Tensor
    config: GenerationConfig
    meta: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        imgs, tg = self.images, self.targets
        if not isinstance(imgs, torch.Tensor) or imgs.dim() != 4:
            raise FingerprintFileError(f"images must be N x C x H x W, got {tuple(getattr(imgs, 'shape', ()))}")
        if imgs.dtype not in (torch.uint8, torch.float32):
            raise FingerprintFileError(f"images must be uint8 or float32, got {imgs.dtype}")
        if not isinstance(tg, torch.Tensor) or tg.dtype != torch.int64 or tg.shape != (imgs.shape[0],):
            raise FingerprintFileError(f"targets must be int64 of shape ({imgs.shape[0]},), got "
                                       f"{getattr(tg, 'dtype', None)} {tuple(getattr(tg, 'shape', ()))}")
        if imgs.dtype == torch.float32 and imgs.numel() and not (torch.isfinite(imgs).all() and imgs.min() >= 0
                                                                 and imgs.max() <= 1):
            raise FingerprintFileError("float32 images must be finite pixels in [0, 1]")
        _check_meta(self.meta, tuple(imgs.shape[1:]))
        nc = self.meta.get("num_classes")
        if nc is not None and tg.numel() and (int(tg.min()) < 0 or int(tg.max()) >= int(nc)):
            raise FingerprintFileError(f"targets must lie in [0, {nc}), got range [{int(tg.min())}, {int(tg.max())}]")
        if self.calibration is not None:
            _check_calibration(self.calibration, int(imgs.shape[0]))

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.images.shape[0])

    @functools.cached_property
    def keys(self) -> list[bytes]:
        """:func:`image_keys` of the images, computed once per set (every judge call and export reads them)."""
        return image_keys(self.images)

    @functools.cached_property
    def image_ids(self) -> torch.Tensor:
        """One id per image, shared by the queries that hold the same image (from :attr:`keys`), computed once."""
        ids: dict[bytes, int] = {}
        return torch.tensor([ids.setdefault(k, len(ids)) for k in self.keys], dtype=torch.int64)

    def pixels(self) -> torch.Tensor:
        """Images as float32 in [0, 1] (uint8 / 255)."""
        return self.images.float() / 255.0 if self.images.dtype == torch.uint8 else self.images

    def to(self, device: torch.device | str) -> "FingerprintSet":
        """Copy with tensors on ``device``."""
        return dataclasses.replace(self, images=self.images.to(device), targets=self.targets.to(device))

    def with_calibration(self, calibration: dict[str, Any] | None) -> "FingerprintSet":
        """Copy with a new calibration block."""
        return dataclasses.replace(self, calibration=calibration)

    def header(self) -> dict[str, Any]:
        """Everything but the tensors, as a JSON-able dict."""
        return {"format": FORMAT_VERSION, "config": self.config.to_dict(), "meta": self.meta,
                "calibration": self.calibration}

    @property
    def digest(self) -> str:
        """SHA-256 content digest over the canonical header JSON and the tensors' bytes."""
        return _digest(_canonical(self.header()), self.images, self.targets)

    def save(self, path: str | Path) -> Path:
        """Atomically write the set as safetensors (temp file + rename)."""
        from safetensors.torch import save

        header = _canonical(self.header())
        tensors = {"images": self.images.detach().cpu().contiguous(), "targets": self.targets.detach().cpu().contiguous()}
        data = save(tensors, metadata={"charex": header, "digest": _digest(header, tensors["images"], tensors["targets"])})
        return atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | Path) -> "FingerprintSet":
        """Read a set written by :meth:`save`; refuses missing, corrupt or modified files."""
        return cls.from_bytes(read_file(path, "fingerprint"), str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = "fingerprint") -> "FingerprintSet":
        """:meth:`load` from the file's bytes (``name`` labels the errors); the same checks."""
        from safetensors.torch import load

        p = name
        try:
            tensors = load(raw)
            meta = _read_metadata(raw)
        except Exception as e:
            raise FingerprintFileError(f"{p} is not a valid fingerprint file (corrupt or truncated safetensors): {e}") from e
        if "charex" not in meta or "digest" not in meta or set(tensors) != {"images", "targets"}:
            raise FingerprintFileError(f"{p} is a safetensors file but not a charex fingerprint "
                                       f"(tensors {sorted(tensors)}, metadata keys {sorted(meta)})")
        if _digest(meta["charex"], tensors["images"], tensors["targets"]) != meta["digest"]:
            raise FingerprintFileError(f"{p}: content digest mismatch: the file was modified or corrupted after "
                                       "it was written; regenerate it or restore the original")
        try:
            header = json.loads(meta["charex"])
            if header.get("format") != FORMAT_VERSION:
                raise FingerprintFileError(f"{p}: unsupported fingerprint format {header.get('format')!r}")
            return cls(images=tensors["images"], targets=tensors["targets"],
                       config=GenerationConfig.from_dict(header["config"]), meta=header.get("meta", {}),
                       calibration=header.get("calibration"))
        except FingerprintFileError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise FingerprintFileError(f"{p}: fingerprint header is invalid: {e}") from e


def image_keys(images: torch.Tensor) -> list[bytes]:
    """One key per image of an N x C x H x W tensor, equal exactly when the pixels are: how a query the set holds
    more than once is found (it is sent once; :func:`charex.judge.query.judge`, ``charex export``)."""
    return [hashlib.blake2b(im.numpy().tobytes(), digest_size=16).digest() for im in images.cpu()]


def with_repeats(answers: dict[int, int], keys: list[bytes]) -> dict[int, int]:
    """``answers`` (query index -> label) given also to every query whose image key (``FingerprintSet.keys``,
    ``Kit.keys``) is an answered one's: ``charex export`` writes a repeated image once (a mistake test's sections
    can share images)."""
    label = {keys[i]: lab for i, lab in answers.items() if 0 <= i < len(keys)}
    return {**{i: label[k] for i, k in enumerate(keys) if k in label}, **answers}


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the labelled images and labels (the audit re-runs the mistake test from the same data): each
    tensor's dtype, shape and bytes, as a fingerprint's digest hashes its tensors."""
    return _digest("", images, labels)


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of a fingerprint or kit file; a missing one is a :class:`FingerprintFileError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise FingerprintFileError(f"{what} file not found: {p}")
    return p.read_bytes()


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_unit(v: Any) -> bool:
    """A finite number strictly inside (0, 1)."""
    return is_number(v) and 0 < v < 1


def _check_meta(meta: Any, shape: tuple[int, ...]) -> None:
    """The metadata fields the library reads must have their types (a forged header is refused, not obeyed)."""
    if not isinstance(meta, dict):
        raise FingerprintFileError(f"meta must be an object, got {type(meta).__name__}")
    nc = meta.get("num_classes")
    if nc is not None and not _is_int(nc, 1):
        raise FingerprintFileError(f"meta num_classes must be a positive integer, got {nc!r:.40}")
    s = meta.get("input_shape")
    if s is not None and (not isinstance(s, list) or tuple(s) != shape):
        raise FingerprintFileError(f"meta input_shape {s!r:.40} does not match the images' shape {list(shape)}")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
                                or (nc is not None and len(classes) != nc)):
        raise FingerprintFileError(f"meta classes must be a list of {nc or 'C'} names, got {classes!r:.60}")
    for key in ("references", "surrogates", "twins"):
        rows = meta.get(key)
        if rows is not None and (not isinstance(rows, list) or not all(
                isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("digest"), str)
                for r in rows)):
            raise FingerprintFileError(f"meta {key} must be a list of {{name, digest}} objects, got {rows!r:.60}")
    norm = meta.get("normalization")
    if norm is not None and not isinstance(norm, dict):
        raise FingerprintFileError(f"meta normalization must be an object, got {norm!r:.40}")


def _check_calibration(cal: Any, n: int) -> None:
    """A calibration block must be one that :func:`charex.calibrate` could have written for n examples."""
    if not isinstance(cal, dict):
        raise FingerprintFileError(f"calibration must be an object, got {type(cal).__name__}")
    if n < 1:
        raise FingerprintFileError("a calibrated fingerprint needs at least one example")
    if cal.get("null") not in (None, "logit-normal"):  # another test's null: its test checks it when it is built
        refs = cal.get("references")
        if not (is_unit(cal.get("level")) and isinstance(refs, list) and len(refs) <= 10_000 and all(
                isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("digest"), str)
                for r in refs)):
            raise FingerprintFileError(f"{cal.get('null')!s:.20} calibration block is invalid (level, references): "
                                       "recalibrate the set")
        return
    bad = [k for k in ("mu", "level") if not is_unit(cal.get(k))]
    if cal.get("null") == "logit-normal":
        s_min, s_max = cal.get("s_min"), cal.get("s_max")
        if not (is_number(s_min) and is_number(s_max) and 0 < s_min < s_max <= 10):
            bad.append("s_min/s_max")
        counts, cn = cal.get("counts"), cal.get("counts_n")
        if not (_is_int(cn, 1) and isinstance(counts, list) and len(counts) >= 2 and len(counts) <= 10_000
                and all(_is_int(c, 0) and c <= cn for c in counts)):
            bad.append("counts")
    elif cal.get("null") is not None:
        bad.append("null")
    elif not is_unit(cal.get("rho")):
        bad.append("rho")
    t = cal.get("threshold_matches")
    if not _is_int(t, 0) or t > n + 1:
        bad.append("threshold_matches")
    elif not is_number(cal.get("threshold_rate")) or not math.isclose(cal["threshold_rate"], t / n):
        bad.append("threshold_rate")
    refs = cal.get("references")
    if not isinstance(refs, list) or not all(isinstance(r, dict) and _is_int(r.get("matches"), 0) and
                                             _is_int(r.get("n"), 1) and r["matches"] <= r["n"] for r in refs):
        bad.append("references")
    if bad:
        raise FingerprintFileError(f"calibration block is invalid ({', '.join(bad)}): "
                                   "recalibrate with `charex calibrate`")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(header: str, images: torch.Tensor, targets: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(header.encode())
    for t in (images, targets):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_metadata(raw: bytes) -> dict[str, str]:
    import struct

    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.get("__metadata__", {})
    return meta if isinstance(meta, dict) else {}
