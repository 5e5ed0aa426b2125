"""The kit: every test the owner could make, in one file, judged into one verdict per suspect.

A kit holds one or more calibrated tests (:mod:`charex.judge.tests`) of the same base model: the characteristic
examples (weight copies) and, when the owner has twins, the mistake test (students). The verdict combines the
tests' p-values by **Bonferroni**, a rule fixed in advance: with T tests, p = min(1, T * min_i p_i), and the suspect
is judged derived when p <= level. Under the null (an independent suspect) each test's p is valid, so the combined
false-claim rate is at most ``level`` whatever the dependence between the tests. The test with the smallest p is the
one that "fired".

File format (docs/format.md): safetensors with tensors ``<i>.images`` and ``<i>.targets`` per test, and metadata
``charex-kit`` (canonical JSON: format, level, meta, each test's fingerprint header and digest) and ``digest``
(SHA-256 over that JSON and every tensor). ``load`` refuses a modified file, a test whose own digest does not match,
tests of different base models or input shapes, and a test without calibration. A single fingerprint file opens as
a kit of one test (:func:`open_kit`), so every command takes either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._io import atomic_write_bytes
from ..errors import CharexError, FingerprintFileError
from ..fingerprint import FORMAT_VERSION, FingerprintSet, _canonical, read_file
from ..types import GenerationConfig
from .tests import ExampleTest, MistakeTest, PairTest, TestResult, WeightTest, test_for

KIT_KEY = "charex-kit"


@dataclass(frozen=True)
class Kit:
    """Calibrated tests of one base model and the level of the combined verdict.

    Attributes:
        tests: the tests' fingerprint sets (each with its calibration block), in the order they are numbered for
            export and answers (query indices run on across tests).
        level: the false-claim rate of the combined verdict (Bonferroni over the tests).
        meta: what the kit records beside the tests: ``missing`` (what the owner did not give and what it costs),
            ``created``, ``charex_version``.

    Example:
        >>> kit = Kit.load("kit.safetensors")  # doctest: +SKIP
        >>> [t.name for t in kit.judges()], kit.n  # doctest: +SKIP
        (['examples', 'mistakes'], 2700)
    """

    tests: tuple[FingerprintSet, ...]
    level: float = 0.01
    meta: dict[str, Any] = field(default_factory=dict)
    single: bool = False  # opened from one fingerprint file (not a kit file): its own level, uncalibrated allowed
    origin: str | None = None  # the id of the kit this one was transformed from (answers still name that one)
    weights: WeightTest | None = None  # the weight test (no queries), when the kit holds one

    def __post_init__(self) -> None:
        if not self.tests:
            raise FingerprintFileError("a kit needs at least one test")
        if not 0 < self.level < 1:
            raise FingerprintFileError(f"kit level must lie in (0, 1), got {self.level!r}")
        first = self.tests[0]
        for i, fp in enumerate(self.tests):
            if not self.single and fp.calibration is None:
                raise FingerprintFileError(f"kit test {i} ({test_for(fp).name}) has no calibration: a kit's tests are "
                                           "calibrated when it is made (charex fingerprint ... --calibration)")
            if fp.meta.get("base_model_digest") != first.meta.get("base_model_digest"):
                raise FingerprintFileError(f"kit test {i} was made from another base model (digest "
                                           f"{str(fp.meta.get('base_model_digest'))[:12]} vs "
                                           f"{str(first.meta.get('base_model_digest'))[:12]})")
            if fp.images.shape[1:] != first.images.shape[1:] or fp.images.dtype != first.images.dtype:
                raise FingerprintFileError(f"kit test {i} has {fp.images.dtype} queries of shape "
                                           f"{tuple(fp.images.shape[1:])}, test 0 {tuple(first.images.shape[1:])}")
            if fp.meta.get("num_classes") != first.meta.get("num_classes"):
                raise FingerprintFileError(f"kit test {i} has {fp.meta.get('num_classes')} classes, test 0 "
                                           f"{first.meta.get('num_classes')}")

    # what the answers readers and exporters need: the queries numbered across tests, and the class names
    @property
    def n(self) -> int:
        """Number of queries, all tests together."""
        return sum(fp.n for fp in self.tests)

    @property
    def offsets(self) -> list[int]:
        """Index of each test's first query in the kit's numbering."""
        out, at = [], 0
        for fp in self.tests:
            out.append(at)
            at += fp.n
        return out

    @property
    def classes(self) -> dict[str, Any]:
        """``classes`` and ``num_classes`` of the base model (what answers files name)."""
        m = self.tests[0].meta
        return {"classes": m.get("classes"), "num_classes": m.get("num_classes")}

    @property
    def images(self) -> torch.Tensor:
        """Every query, N x C x H x W, in the kit's numbering."""
        return torch.cat([fp.images for fp in self.tests])

    @property
    def keys(self) -> list[bytes]:
        """Each query's image key (:func:`charex.fingerprint.image_keys`), in the kit's numbering."""
        return [k for fp in self.tests for k in fp.keys]

    @property
    def targets(self) -> torch.Tensor:
        """What the base answers to each query (the examples' targets; for mistakes, the section model's label)."""
        return torch.cat([fp.targets for fp in self.tests])

    @property
    def id(self) -> str:
        """What answers name their kit by (audit logs): the kit's digest, or a single fingerprint's own digest."""
        return self.origin or (self.tests[0].digest if self.single else self.digest)

    @property
    def base_model_digest(self) -> str | None:
        return self.tests[0].meta.get("base_model_digest")

    @property
    def calibrated(self) -> bool:
        return all(fp.calibration is not None for fp in self.tests)

    def judges(self) -> list[ExampleTest | MistakeTest | PairTest]:
        """One query test object per test, in order (the weight test, which sends none, is :attr:`weights`)."""
        return [test_for(fp) for fp in self.tests]

    @property
    def names(self) -> list[str]:
        """Every test's name, the weight test first (the order a verdict lists them)."""
        return (["weights"] if self.weights else []) + [t.name for t in self.judges()]

    def applies(self, same_labels: bool, askable: bool = True) -> list[bool]:
        """Which query tests apply to a suspect that answers the base's label space (``same_labels``) or another
        one: the pair test to the latter only, every other test to the former only; none to a suspect that cannot
        take the kit's queries (``askable`` False: another input shape)."""
        return [askable and bool(getattr(t, "other_labels", False)) != same_labels for t in self.judges()]

    def shares(self, weights_apply: bool, queries_apply: bool, askable: bool = True) -> tuple[float, float]:
        """(the weight test's share of the level, each applying query test's), by the rule fixed when the kit was
        made: the tests that apply to the suspect split the level, the weight test taking its stored share when a
        query test applies too and the query tests the rest equally. ``queries_apply``: whether the suspect answers
        the base's label space (then the tests of the base's labels apply; else the pair test, when the kit holds
        one). Which tests apply is decided by the suspect's form (parameters that line up with the base's; its label
        space) before any statistic is computed, so each form's false-claim rate is at most the level (union bound
        over the tests that apply)."""
        n = sum(self.applies(queries_apply, askable))
        w = self.weights.share if self.weights and weights_apply and n else float(weights_apply)
        return (w if weights_apply else 0.0), ((1.0 - w) / n if n else 0.0)

    def split(self, answers: dict[int, int]) -> list[dict[int, int]]:
        """Kit-numbered answers -> one dict per test, numbered within the test."""
        out: list[dict[int, int]] = [{} for _ in self.tests]
        offs = self.offsets
        for i, lab in answers.items():
            t = max(j for j, o in enumerate(offs) if o <= i)
            out[t][i - offs[t]] = lab
        return out

    def transformed(self, channel: Any) -> "Kit":
        """The kit with every query passed through ``channel`` (uint8 images -> uint8 images)."""
        return dataclasses.replace(self, tests=tuple(dataclasses.replace(fp, images=channel(fp.images))
                                                     for fp in self.tests), origin=self.id)

    # the file
    def _header(self) -> dict[str, Any]:
        head = {"format": FORMAT_VERSION, "level": self.level, "meta": self.meta,
                "tests": [fp.header() for fp in self.tests], "digests": [fp.digest for fp in self.tests]}
        if self.weights is not None:
            sk = self.weights.sketch
            head["weights"] = {"share": self.weights.share, "seed": sk.seed, "null": self.weights.null.to_dict(),
                               "layers": [{"name": k, "shape": list(shape)} for k, shape, _ in sk.layers]}
        return head

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, fp in enumerate(self.tests):
            out[f"{i}.images"] = fp.images.detach().cpu().contiguous()
            out[f"{i}.targets"] = fp.targets.detach().cpu().contiguous()
        if self.weights is not None:
            for j, (_, _, t) in enumerate(self.weights.sketch.layers):
                out[f"weights.{j}"] = t.detach().cpu().float().contiguous()
        return out

    @property
    def digest(self) -> str:
        return _digest(_canonical(self._header()), self._tensors())

    def save(self, path: str | Path) -> Path:
        """Atomically write the kit (temp file + rename)."""
        from safetensors.torch import save

        if self.single:
            raise FingerprintFileError("a single fingerprint opened as a kit is saved as what it is "
                                       "(FingerprintSet.save)")
        header, tensors = _canonical(self._header()), self._tensors()
        return atomic_write_bytes(path, save(tensors, metadata={KIT_KEY: header, "digest": _digest(header, tensors)}))

    @classmethod
    def load(cls, path: str | Path) -> "Kit":
        """Read a kit file; refuses missing, corrupt, modified or inconsistent files (see the module doc)."""
        return cls.from_bytes(read_file(path, "kit"), str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = "kit") -> "Kit":
        from safetensors.torch import load

        from ..fingerprint import _read_metadata

        try:
            tensors = load(raw)
            meta = _read_metadata(raw)
        except Exception as e:
            raise FingerprintFileError(f"{name} is not a valid kit file (corrupt or truncated safetensors): {e}") from e
        if KIT_KEY not in meta or "digest" not in meta:
            raise FingerprintFileError(f"{name} is a safetensors file but not a charex kit (metadata keys "
                                       f"{sorted(meta)})")
        if _digest(meta[KIT_KEY], tensors) != meta["digest"]:
            raise FingerprintFileError(f"{name}: content digest mismatch: the kit was modified or corrupted after it "
                                       "was written; make it again or restore the original")
        try:
            header = json.loads(meta[KIT_KEY])
            if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
                raise FingerprintFileError(f"{name}: unsupported kit format {header.get('format')!r}")
            heads, digests = header["tests"], header["digests"]
            wh = header.get("weights")
            wnames = {f"weights.{j}" for j in range(len(wh["layers"]))} if isinstance(wh, dict) else set()
            if not isinstance(heads, list) or not isinstance(digests, list) or len(heads) != len(digests) or \
                    set(tensors) != {f"{i}.{k}" for i in range(len(heads)) for k in ("images", "targets")} | wnames:
                raise FingerprintFileError(f"{name}: the kit's tests and tensors do not correspond")
            tests = []
            for i, (h, d) in enumerate(zip(heads, digests)):
                fp = FingerprintSet(images=tensors[f"{i}.images"], targets=tensors[f"{i}.targets"],
                                    config=GenerationConfig.from_dict(h["config"]), meta=h.get("meta", {}),
                                    calibration=h.get("calibration"))
                if fp.digest != d:
                    raise FingerprintFileError(f"{name}: test {i}'s digest does not match its contents (a tampered "
                                               "section)")
                tests.append(fp)
            level = header["level"]
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise FingerprintFileError(f"{name}: kit level must be a number, got {level!r:.40}")
            kmeta = header.get("meta", {})
            if not isinstance(kmeta, dict):
                raise FingerprintFileError(f"{name}: kit meta must be an object")
            return cls(tests=tuple(tests), level=float(level), meta=kmeta,
                       weights=None if wh is None else _weight_test(wh, tensors, name))
        except FingerprintFileError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FingerprintFileError(f"{name}: kit header is invalid: {e}") from e


def _weight_test(head: Any, tensors: dict[str, torch.Tensor], name: str) -> WeightTest:
    """The weight test from a kit's header and tensors: every layer's sketch the shape its header says (units x
    directions), finite, at unit norm; its null and share as written."""
    from .weights import WeightNull, WeightSketch, sketch_dims

    layers = []
    for j, h in enumerate(head["layers"]):
        t, shape = tensors[f"weights.{j}"], tuple(int(x) for x in h["shape"])
        want = (shape[0], sketch_dims(math.prod(shape[1:]))) if len(shape) in (2, 4) else None
        if want is None or t.dtype != torch.float32 or tuple(t.shape) != want or not torch.isfinite(t).all() or \
                not torch.allclose(t.norm(dim=1), torch.ones(shape[0]), atol=1e-3):
            raise FingerprintFileError(f"{name}: the weight test's sketch of layer {h.get('name')} is malformed "
                                       f"({t.dtype} {tuple(t.shape)} for a layer of shape {shape})")
        layers.append((str(h["name"]), shape, t))
    try:
        return WeightTest(WeightSketch(tuple(layers), int(head["seed"])), WeightNull.from_dict(head["null"]),
                          float(head["share"]))
    except CharexError as e:
        raise FingerprintFileError(f"{name}: {e}") from e


def open_kit(path: str | Path) -> Kit:
    """A kit file, or a single fingerprint file as a kit of one test (at its own calibration level)."""
    return kit_from_bytes(read_file(path, "fingerprint"), str(path))


def kit_from_bytes(raw: bytes, name: str = "fingerprint") -> Kit:
    """:func:`open_kit` from a file's bytes."""
    from ..fingerprint import _read_metadata

    try:
        is_kit = KIT_KEY in _read_metadata(raw)
    except Exception:
        is_kit = False
    if is_kit:
        return Kit.from_bytes(raw, name)
    fp = FingerprintSet.from_bytes(raw, name)
    level = fp.calibration.get("level", 0.01) if fp.calibration else 0.01
    return Kit(tests=(fp,), level=float(level), single=True)


@dataclass(frozen=True)
class KitVerdict:
    """One suspect judged with a kit.

    Attributes:
        suspect: its name. decision: ``derived``, ``not derived`` or ``uncalibrated``.
        p_value: the combined p (Bonferroni over the kit's tests), None when uncalibrated.
        queries: how many queries the verdict used, all tests together.
        tests: each test's result (a test not asked has ``queries`` 0 and a ``note``).
        fired: the test with the smallest p (None when none was asked).
        extra: the suspect's channel (remote settings, ``sent``, ``stopped_early``, ...).
    """

    suspect: str
    decision: str
    p_value: float | None
    queries: int
    tests: list[dict[str, Any]]
    fired: str | None
    level: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the kit-level fields, each test's, and (a kit of one count test) that test's fields flat."""
        out = {"suspect": self.suspect, "decision": self.decision, "p_value": self.p_value,
               "queries": self.queries, "fired": self.fired, "level": self.level, "tests": self.tests, **self.extra}
        if len(self.tests) == 1:  # one test: its numbers at the top too (matches, match_rate, ...), as before kits
            out.update({k: v for k, v in self.tests[0].items() if k not in ("test", "statistic", "queries")})
            out["p_value"] = self.p_value
        return out


def combine(kit: Kit, results: Sequence[TestResult | None], name: str, extra: dict[str, Any] | None = None,
            notes: Sequence[str | None] = (), *, weights: TestResult | None = None, weights_note: str | None = None,
            queries_apply: bool = True, queries_note: str | None = None, askable: bool = True) -> KitVerdict:
    """The kit's verdict from its tests' results, by weighted Bonferroni over the tests that apply
    (:meth:`Kit.shares`): p = min(1, min_i p_i / share_i), derived when p <= level.

    Args:
        results: each query test's result (None: not asked; ``notes`` says why). weights: the weight test's result
            when it applies (``weights_note``: why it does not). queries_apply: False when the suspect answers another
            label space (``queries_note``: why); the tests of the base's labels then take no share and the pair
            test, when the kit holds one, applies instead. askable: False when the suspect cannot take the queries
            at all (no query test applies).
    """
    ws, qs = kit.shares(weights is not None, queries_apply, askable)
    rows: list[dict[str, Any]] = []
    asked: list[tuple[TestResult, float]] = []
    if kit.weights is not None:
        if weights is None:
            rows.append({"test": "weights", "statistic": None, "p_value": None, "queries": 0, "applies": False,
                         "note": weights_note or "not applicable"})
        else:
            rows.append({**weights.to_dict(), "applies": True, "share": ws})
            asked.append((weights, ws))
    applies = kit.applies(queries_apply, askable)
    for i, (fp, r) in enumerate(zip(kit.tests, results)):
        note = notes[i] if i < len(notes) else None
        if not applies[i]:
            why = (queries_note or "not applicable") if not (queries_apply and askable) else \
                "not applicable: it judges suspects of another label space (the base's label space: the other tests)"
            rows.append({"test": test_for(fp).name, "statistic": None, "p_value": None, "queries": 0,
                         "applies": False, "note": why})
        elif r is None:
            rows.append({"test": test_for(fp).name, "statistic": None, "p_value": None, "queries": 0,
                         "applies": True, "note": note or "not asked"})
        else:
            rows.append({**r.to_dict(), **({"note": note} if note else {}), "applies": True, "share": qs})
            asked.append((r, qs))
    queries = sum(r.queries for r, _ in asked)
    if not kit.calibrated or any(r.p_value is None for r, _ in asked):
        return KitVerdict(name, "uncalibrated", None, queries, rows, None, kit.level, dict(extra or {}))
    if not asked:
        if weights is None and not any(applies):
            return KitVerdict(name, "not applicable", None, 0, rows, None, kit.level, dict(extra or {}))
        why = "; ".join(f"{r['test']}: {r['note']}" for r in rows)
        raise CharexError(f"{name}: no test of the kit could be judged ({why})")
    best, share = min(asked, key=lambda a: float(a[0].p_value) / a[1])  # type: ignore[arg-type]
    p = min(1.0, float(best.p_value) / share)  # type: ignore[arg-type]
    derived = p <= kit.level
    return KitVerdict(name, "derived" if derived else "not derived", p, queries, rows, best.test if derived else None,
                      kit.level, dict(extra or {}))


def _digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(header.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
