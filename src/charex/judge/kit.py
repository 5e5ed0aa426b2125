"""The kit: every test the owner could make, in one file, judged into one verdict per suspect.

A kit holds one or more calibrated tests (:mod:`charex.judge.registry`) of the same base model, built once when it is
loaded: the weight test (open weights, no query), the characteristic examples (weight copies) and, when the owner has
twins, the mistake test (students) and the pair test (another label space). The verdict combines the p-values of the
tests that apply by **weighted Bonferroni**, a rule fixed in advance (:func:`charex.judge.protocol.shares`,
:func:`charex.judge.protocol.combine`): p = min(1, min_i p_i / share_i), derived when p <= level. Under the null (an
independent suspect) each test's p is valid, so the combined false-claim rate is at most ``level`` whatever the
dependence between the tests. The test with the smallest p / share is the one that "fired".

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._io import atomic_write_bytes
from ..errors import CharexError, FingerprintFileError
from ..fingerprint import FORMAT_VERSION, FingerprintSet, _canonical, _read_metadata, read_file
from ..types import GenerationConfig
from .protocol import RELATIONS, Test, TestResult, combine, format_p
from .registry import READING, test_for

KIT_KEY = "charex-kit"


def asks(t: Test) -> bool:
    """Whether a test asks the suspect queries (its query set is ``t.fp``), rather than reading it."""
    return getattr(t, "fp", None) is not None


@dataclass(frozen=True)
class Kit:
    """Calibrated tests of one base model and the level of the combined verdict.

    Attributes:
        tests: the tests (:class:`~charex.judge.protocol.Test`), built once: those that read the suspect first, then
            those that ask it, in the order their queries are numbered for export and answers (query indices run on
            across tests). A :class:`~charex.fingerprint.FingerprintSet` given here becomes its test
            (:func:`~charex.judge.registry.test_for`).
        level: the false-claim rate of the combined verdict (weighted Bonferroni over the tests that apply).
        meta: what the kit records beside the tests: ``missing`` (what the owner did not give and what it costs),
            ``created``, ``charex_version``.

    Example:
        >>> kit = Kit.load("kit.safetensors")  # doctest: +SKIP
        >>> kit.names, kit.n  # doctest: +SKIP
        (['weights', 'examples', 'mistakes', 'pairs'], 6354)
    """

    tests: tuple[Any, ...]
    level: float = 0.01
    meta: dict[str, Any] = field(default_factory=dict)
    single: bool = False  # opened from one fingerprint file (not a kit file): its own level, uncalibrated allowed
    origin: str | None = None  # the id of the kit this one was transformed from (answers still name that one)

    def __post_init__(self) -> None:
        try:  # a query set becomes its test: its kind checks its own calibration block
            tests = tuple(test_for(t) if isinstance(t, FingerprintSet) else t for t in self.tests)
        except FingerprintFileError:
            raise
        except CharexError as e:
            raise FingerprintFileError(str(e)) from e
        object.__setattr__(self, "tests", tests)
        if not tests:
            raise FingerprintFileError("a kit needs at least one test")
        if not 0 < self.level < 1:
            raise FingerprintFileError(f"kit level must lie in (0, 1), got {self.level!r}")
        sets = self.sets  # a kit of reading tests alone (``charex weights``) asks nothing
        first = sets[0] if sets else None
        for i, (fp, t) in enumerate(zip(sets, self.queried)):
            if not self.single and not t.calibrated:
                raise FingerprintFileError(f"kit test {i} ({t.name}) has no calibration: a kit's tests are "
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

    @property
    def queried(self) -> tuple[Any, ...]:
        """The tests that ask the suspect, in the kit's numbering."""
        return tuple(t for t in self.tests if asks(t))

    @property
    def sets(self) -> tuple[FingerprintSet, ...]:
        """The query sets of the tests that ask, in the kit's numbering."""
        return tuple(t.fp for t in self.queried)

    def get(self, kind: type) -> Any:
        """The kit's test of that kind (class), or None."""
        return next((t for t in self.tests if isinstance(t, kind)), None)

    # what the answers readers and exporters need: the queries numbered across tests, and the class names
    @property
    def n(self) -> int:
        """Number of queries, all tests together."""
        return sum(fp.n for fp in self.sets)

    @property
    def offsets(self) -> list[int]:
        """Index of each asking test's first query in the kit's numbering."""
        out, at = [], 0
        for fp in self.sets:
            out.append(at)
            at += fp.n
        return out

    @property
    def classes(self) -> dict[str, Any]:
        """``classes`` and ``num_classes`` of the base model (what answers files name)."""
        m = self.sets[0].meta if self.sets else {}
        return {"classes": m.get("classes"), "num_classes": m.get("num_classes")}

    @property
    def images(self) -> torch.Tensor:
        """Every query, N x C x H x W, in the kit's numbering."""
        return torch.cat([fp.images for fp in self.sets])

    @property
    def keys(self) -> list[bytes]:
        """Each query's image key (:func:`charex.fingerprint.image_keys`), in the kit's numbering."""
        return [k for fp in self.sets for k in fp.keys]

    @property
    def targets(self) -> torch.Tensor:
        """What the base answers to each query (the examples' targets; for mistakes, the section model's label)."""
        return torch.cat([fp.targets for fp in self.sets])

    @property
    def id(self) -> str:
        """What answers name their kit by (audit logs): the kit's digest, or a single fingerprint's own digest."""
        return self.origin or (self.sets[0].digest if self.single else self.digest)

    @property
    def base_model_digest(self) -> str | None:
        return self.sets[0].meta.get("base_model_digest") if self.sets else None

    @property
    def calibrated(self) -> bool:
        return all(t.calibrated for t in self.tests)

    @property
    def names(self) -> list[str]:
        """Every test's name, in the order a verdict lists them (those that read the suspect first)."""
        return [t.name for t in self.tests]

    def split(self, answers: dict[int, int]) -> list[dict[int, int]]:
        """Kit-numbered answers -> one dict per asking test, numbered within the test."""
        out: list[dict[int, int]] = [{} for _ in self.sets]
        offs = self.offsets
        for i, lab in answers.items():
            t = max(j for j, o in enumerate(offs) if o <= i)
            out[t][i - offs[t]] = lab
        return out

    def transformed(self, channel: Any) -> "Kit":
        """The kit with every query passed through ``channel`` (uint8 images -> uint8 images)."""
        return dataclasses.replace(self, tests=tuple(dataclasses.replace(t.fp, images=channel(t.fp.images))
                                                     if asks(t) else t for t in self.tests), origin=self.id)

    # the file: each asking test's query set as ``<i>.images`` / ``<i>.targets`` and its header under ``tests``; a
    # reading test's header under its kit key and its tensors named ``<key>.<j>``
    def _header(self) -> dict[str, Any]:
        head = {"format": FORMAT_VERSION, "level": self.level, "meta": self.meta,
                "tests": [fp.header() for fp in self.sets], "digests": [fp.digest for fp in self.sets]}
        head.update({t.kind: t.header() for t in self.tests if not asks(t)})
        return head

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, fp in enumerate(self.sets):
            out[f"{i}.images"] = fp.images.detach().cpu().contiguous()
            out[f"{i}.targets"] = fp.targets.detach().cpu().contiguous()
        for t in self.tests:
            if not asks(t):
                out.update(t.tensors())
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
            reading = [(k, header[k.kind]) for k in READING if header.get(k.kind) is not None]
            if any(not isinstance(h, dict) for _, h in reading):
                raise FingerprintFileError(f"{name}: a reading test's header must be an object")
            names = set().union(*(k.tensor_names(h) for k, h in reading))
            if not isinstance(heads, list) or not isinstance(digests, list) or len(heads) != len(digests) or \
                    set(tensors) != {f"{i}.{k}" for i in range(len(heads)) for k in ("images", "targets")} | names:
                raise FingerprintFileError(f"{name}: the kit's tests and tensors do not correspond")
            tests: list[Any] = [k.from_header(h, tensors, name) for k, h in reading]
            for i, (h, d) in enumerate(zip(heads, digests)):
                fp = FingerprintSet(images=tensors[f"{i}.images"], targets=tensors[f"{i}.targets"],
                                    config=GenerationConfig.from_dict(h["config"]), meta=h.get("meta", {}),
                                    calibration=h.get("calibration"))
                if fp.digest != d:
                    raise FingerprintFileError(f"{name}: test {i}'s digest does not match its contents (a tampered "
                                               "section)")
                tests.append(test_for(fp))
            level = header["level"]
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise FingerprintFileError(f"{name}: kit level must be a number, got {level!r:.40}")
            kmeta = header.get("meta", {})
            if not isinstance(kmeta, dict):
                raise FingerprintFileError(f"{name}: kit meta must be an object")
            return cls(tests=tuple(tests), level=float(level), meta=kmeta)
        except FingerprintFileError:
            raise
        except (CharexError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FingerprintFileError(f"{name}: kit header is invalid: {e}") from e


def open_kit(path: str | Path) -> Kit:
    """A kit file, or a single fingerprint file as a kit of one test (at its own calibration level)."""
    return kit_from_bytes(read_file(path, "fingerprint"), str(path))


def kit_from_bytes(raw: bytes, name: str = "fingerprint") -> Kit:
    """:func:`open_kit` from a file's bytes."""
    try:
        is_kit = KIT_KEY in _read_metadata(raw)
    except Exception:
        is_kit = False
    if is_kit:
        return Kit.from_bytes(raw, name)
    return one_test(FingerprintSet.from_bytes(raw, name))


def one_test(fp: FingerprintSet) -> Kit:
    """One query set as a kit of one test, at its own calibration level (uncalibrated allowed)."""
    level = fp.calibration.get("level", 0.01) if fp.calibration else 0.01
    return Kit(tests=(fp,), level=float(level), single=True)


@dataclass(frozen=True)
class Finding:
    """One test's row in a verdict: its result when it applied and was judged, else why not.

    Attributes:
        test: the test (its words, its cell). result: its result (None: not applicable, not asked or not judged).
        applies: whether it applies to the suspect's form. share: its share of the level (when judged).
        note: why it was not judged, or a remark on its result.
    """

    test: Any = field(compare=False)
    result: TestResult | None
    applies: bool
    share: float | None = None
    note: str | None = None

    @property
    def name(self) -> str:
        return self.test.name

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON: its result's fields, ``applies``, ``share``; or ``note`` saying why there is none."""
        if self.result is None:
            return {"test": self.name, "statistic": None, "p_value": None, "queries": 0, "applies": self.applies,
                    "note": self.note or ("not asked" if self.applies else "not applicable")}
        return {**self.result.to_dict(), **({"note": self.note} if self.note else {}), "applies": True,
                "share": self.share}

    @property
    def bound(self) -> str | None:
        """``lower`` when its p is a lower bound (it stopped early not derived: the unsent queries were completed in
        the suspect's favour), ``upper`` when an upper bound (stopped derived), None when exact."""
        return None if self.result is None else self.result.detail.get("p_value_bound")

    def words(self, decision: str | None = None, p_value: float | None = None, bound: str | None = None) -> str:
        """What the test found, in its own words, with its own p (or, given the kit's ``decision``, the kit's
        ``p_value``, whether it is a ``bound`` and the decision: a one-test kit's line)."""
        r = self.to_dict()
        if self.result is None:
            return f"{self.name}: {r['note']}"
        words = self.test.words(r)
        p, rel = (r.get("p_value"), self.bound) if decision is None else (p_value, bound)
        if p is not None:
            words += f", {p_text(p, rel)}" + (f": {decision.upper()}" if decision else "")
        return words + (f" [{self.note}]" if self.note else "")


def p_text(p: float | None, bound: str | None = None) -> str:
    """``p = X``, or ``p >= X`` / ``p <= X`` when p is a lower / upper bound (a test that stopped early)."""
    return f"p {'>=' if bound == 'lower' else '<=' if bound == 'upper' else '='} {format_p(p)}"


@dataclass(frozen=True)
class KitVerdict:
    """One suspect judged with a kit.

    Attributes:
        suspect: its name. decision: ``derived``, ``not derived``, ``uncalibrated`` or ``not applicable``.
        p_value: the combined p (weighted Bonferroni over the tests that apply), None when uncalibrated.
        queries: how many queries the verdict used, all tests together (images sent, or answers read).
        findings: each test's :class:`Finding` (a test not asked has no result and a ``note``).
        fired: the test with the smallest p / share, when derived.
        extra: the suspect's channel (remote settings, ``sent``, ``stopped_early``, ...).
    """

    suspect: str
    decision: str
    p_value: float | None
    queries: int
    findings: tuple[Finding, ...]
    fired: str | None
    level: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tests(self) -> list[dict[str, Any]]:
        """Each finding as JSON (:meth:`Finding.to_dict`)."""
        return [f.to_dict() for f in self.findings]

    @property
    def bound(self) -> str | None:
        """Whether the kit's p is a bound: ``lower`` (not derived, and a test stopped early: its p was taken at the
        completion of the unsent queries most favourable to the suspect, so the p every query would give is at
        least this), ``upper`` (derived by a test that stopped early: at most this), None (exact, or a test stopped
        for futility: its p is the one of what it was asked)."""
        if self.p_value is None:
            return None
        if self.decision == "derived":
            return next((f.bound for f in self.findings if f.result is not None and f.result.test == self.fired), None)
        stopped = [f for f in self.findings if f.result is not None and f.result.detail.get("stopped")]
        return "lower" if any(f.bound for f in self.findings) and not stopped else None  # a futility stop: no bound

    @property
    def relation(self) -> str | None:
        """The suspect's relation to the base: ``derived``, or, not derived, what a test that knows the base's
        parent found (``parent``, ``sibling``, ``outside``: :data:`charex.judge.updates.RELATIONS`); None when no
        test knows the parent."""
        if self.decision == "derived":
            return "derived"
        if self.decision != "not derived":
            return None
        return next((f.result.detail["relation"] for f in self.findings
                     if f.result is not None and f.result.detail.get("relation")), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the kit-level fields, each test's, and (a kit of one test) that test's fields flat;
        ``p_value_bound`` (``lower``, ``upper`` or null) says whether the kit's p is a bound; ``relation``
        (:attr:`relation`)."""
        tests = self.tests
        out = {"suspect": self.suspect, "decision": self.decision, "p_value": self.p_value,
               "p_value_bound": self.bound, "relation": self.relation, "queries": self.queries,
               "fired": self.fired, "level": self.level, "tests": tests, **self.extra}
        if len(tests) == 1:  # one test: its numbers at the top too (matches, match_rate, ...), as before kits
            out.update({k: v for k, v in tests[0].items() if k not in ("test", "statistic", "queries")})
            out.update(p_value=self.p_value, relation=self.relation)
        return out

    def lines(self) -> list[str]:
        """The verdict for people: one line for a one-test kit, else a head line and each test's words beneath;
        a warning when the suspect's answers were nearly all one class."""
        warn = (self.extra.get("answer_mix") or {}).get("warning")
        tail = [f"    warning: {warn}"] if warn else []
        why = RELATIONS.get(self.relation or "")
        tail = ([f"    {self.decision}: {why}"] if why else []) + tail
        if len(self.findings) == 1:
            words = self.findings[0].words(self.decision, self.p_value, self.bound)
            return [f"{self.suspect}: " + words.split(": ", 1)[1]] + tail
        beneath = [f"    {f.words()}" for f in self.findings]
        if self.p_value is None:
            return [f"{self.suspect}: {self.decision.upper()}: no test of the kit applies; 0 queries"] + beneath + tail
        applied = sum(1 for f in self.findings if f.applies)
        head = (f"{self.suspect}: {self.decision.upper()}, {self.p_text()} (Bonferroni over the {applied} tests "
                f"that apply){', caught by the ' + self.fired + ' test' if self.fired else ''}; {self.queries} "
                f"queries{' (stopped early)' if self.extra.get('stopped_early') else ''}")
        return [head] + beneath + tail

    def p_text(self) -> str:
        """``p = X``, or ``p >= X`` / ``p <= X`` when the kit's p is a bound (:attr:`bound`)."""
        return p_text(self.p_value, self.bound)


def verdict(kit: Kit, findings: Sequence[Finding], name: str, extra: dict[str, Any] | None = None,
            queries: int | None = None) -> KitVerdict:
    """The kit's verdict from its tests' findings, by weighted Bonferroni over the tests judged
    (:func:`charex.judge.protocol.combine`): p = min(1, min_i p_i / share_i), derived when p <= level. Uncalibrated
    when a test judged has no calibrated p; ``not applicable`` when no test applies to the suspect. ``queries``: what
    the suspect was asked (the images sent, or the answers read; default: the tests' answers added up)."""
    asked = [(f.result, float(f.share)) for f in findings if f.result is not None]  # type: ignore[arg-type]
    queries = sum(r.queries for r, _ in asked) if queries is None else queries
    extra = dict(extra or {})
    if not kit.calibrated or any(r.p_value is None for r, _ in asked):
        return KitVerdict(name, "uncalibrated", None, queries, tuple(findings), None, kit.level, extra)
    if not asked:
        if not any(f.applies for f in findings):
            return KitVerdict(name, "not applicable", None, queries, tuple(findings), None, kit.level, extra)
        why = "; ".join(f"{f.name}: {f.to_dict()['note']}" for f in findings)
        raise CharexError(f"{name}: no test of the kit could be judged ({why})")
    p, best = combine(asked)
    derived = p <= kit.level
    return KitVerdict(name, "derived" if derived else "not derived", p, queries, tuple(findings),
                      best.test if derived else None, kit.level, extra)


def _digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(header.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
