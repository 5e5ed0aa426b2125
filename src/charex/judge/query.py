"""Judging one suspect with a kit, whatever the suspect is: a model here, a remote endpoint, or answers collected
elsewhere. One loop for all: the tests are asked cheapest first, each test's queries in a seeded random order and
in batches; with ``sequential`` a test stops as soon as no further answer can change its decision (at its share of
the level), and the kit stops as soon as the combined verdict is "derived" (more answers can only lower the
smallest p); ``max_queries`` caps what is sent, all tests together. An image the kit holds more than once (a
mistake test's sections share images: one image can be a mistake of the base and of a twin) is sent once and its
answer used for every copy. ``queries`` in the verdict counts the images sent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from ..errors import CharexError
from ..fingerprint import FingerprintSet, with_repeats
from ..models.probe import probe_model
from ..types import Verdict
from .chance import answer_mix
from .kit import Finding, Kit, KitVerdict, asks, one_test, verdict
from .protocol import Form, TestResult, decides, shares
from .verify import predict, require_counted


class Suspect(Protocol):
    """Anything that labels queries: ``labels(fp, idx)`` -> one class index per query ``idx`` of test ``fp``."""

    batch_size: int

    def labels(self, fp: FingerprintSet, idx: list[int]) -> list[int]: ...


class LocalSuspect:
    """A model on this machine (a torch module, an ONNX session, a Hugging Face model: anything loaded)."""

    def __init__(self, model: torch.nn.Module, name: str = "model", batch_size: int = 256,
                 probed: bool = False, same_labels: bool = True) -> None:
        """``probed``: the caller already checked the model's input shape and class count (``probe_model``).
        ``same_labels`` False: the model answers another task even if its class count is the base's."""
        self.model, self.name, self.batch_size = model, name, batch_size
        self._probed, self.same_labels = probed, same_labels

    def label_space(self, fp: FingerprintSet) -> str | None:
        """Why the query tests of ``fp``'s kit do not apply (None when they do): the model answers another number
        of classes than the base. Other faults (input shape, NaN logits) are errors."""
        want = fp.meta.get("num_classes")
        got = probe_model(self.model, fp.meta.get("input_shape", list(fp.images.shape[1:])), None, name=self.name)
        self._probed = True  # its input shape is checked; its class count decides which tests apply
        if not self.same_labels:
            return f"not applicable: the suspect answers another task ({got} classes; --other-labels)"
        if want is None or got == want:
            return None
        return f"not applicable: the suspect answers {got} classes, the base {want} (another label space)"

    def labels(self, fp: FingerprintSet, idx: list[int]) -> list[int]:
        if not self._probed:  # input shape and class count checked once, with a clear error
            probe_model(self.model, fp.meta.get("input_shape", list(fp.images.shape[1:])), fp.meta.get("num_classes"),
                        name=self.name)
            self._probed = True
        x = fp.images[idx]
        return predict(self.model, x.float() / 255 if x.dtype == torch.uint8 else x, name=self.name).tolist()


class RemoteSuspect:
    """A model behind the Open Inference Protocol (:class:`charex.models.remote.RemoteModel`)."""

    def __init__(self, remote: Any, same_labels: bool = True) -> None:
        self.remote = remote
        self.batch_size = remote.batch_size
        self.same_labels = same_labels

    def label_space(self, fp: FingerprintSet) -> str | None:
        """None when the endpoint answers the base's label space, else why the tests of the base's labels do not
        apply (the owner said so: ``--other-labels``)."""
        return None if self.same_labels else "not applicable: the endpoint answers another task (--other-labels)"

    def labels(self, fp: FingerprintSet, idx: list[int]) -> list[int]:
        return self.remote.labels(fp.images.numpy()[idx])


def judge(kit: Kit, suspect: Suspect, name: str, *, max_queries: int | None = None, sequential: bool = False,
          stop_when_derived: bool = True, seed: int = 0, on_answer: Callable[[int, int], None] | None = None,
          extra: dict[str, Any] | None = None) -> KitVerdict:
    """Judge ``suspect`` with the kit: the tests that read it first, then the kit's queries, cheapest test first.

    Args:
        kit: the kit (or one fingerprint as a kit: :func:`charex.judge.kit.open_kit`).
        suspect: what answers (:class:`LocalSuspect`, :class:`RemoteSuspect`, or any ``labels(fp, idx)``).
        name: the suspect's name in the verdict.
        max_queries: send at most this many queries, all tests together (None: no cap). Each test then uses the
            queries answered (a mistake test needs answers in every section; it is left out when it got none).
        sequential: stop each test once its decision is settled (its p is then a bound).
        stop_when_derived: ask no further test once the verdict is "derived" (more answers can only lower the
            smallest p; the tests not asked are named so).
        seed: the order of the queries within each test (a seeded shuffle; a ranked mistake test sends its most
            telling queries first, whatever the seed).
        on_answer: called with (kit query index, label) for every answer (e.g. an audit log).

    Returns:
        The :class:`~charex.judge.kit.KitVerdict`; ``extra`` gains ``sent`` and ``stopped_early``.

    Example:
        >>> v = judge(Kit.load("kit.safetensors"), LocalSuspect(model), "suspect", max_queries=1000)  # doctest: +SKIP
        >>> v.decision, v.p_value, v.queries  # doctest: +SKIP
    """
    if max_queries is not None and max_queries < 1:
        raise CharexError(f"--max-queries must be >= 1, got {max_queries}")
    form, why, results = _read(kit, suspect)
    applying = [i for i, w in enumerate(why) if w is None]
    share = dict(zip(applying, shares([kit.tests[i] for i in applying])))
    settled = next((r.test for i, r in enumerate(results) if r is not None and stop_when_derived
                    and decides(r.p_value, share[i], kit.level)), None)  # a reading test decided: nothing asked
    answers: dict[int, dict[int, int]] = {i: {} for i, t in enumerate(kit.tests) if asks(t)}
    notes: dict[int, str] = {}
    asker, early = _Asker(suspect, max_queries, on_answer, sequential), False
    for ti, order, offset in _plan(kit, applying, seed) if not settled else ():
        t, level = kit.tests[ti], kit.level * share[ti]  # the test's level under the kit's Bonferroni
        answers[ti], stopped = asker.ask(t, order, offset,
                                         lambda got: len(got) < t.fp.n and t.settled(got, level) is not None)
        early = early or stopped
        results[ti], note = _result(t, answers[ti], level if stopped else None, max_queries)
        if note:
            notes[ti] = note
        if (sequential or stop_when_derived) and any(
                r is not None and asks(kit.tests[i]) and decides(r.p_value, share[i], kit.level)
                for i, r in enumerate(results)):
            for tj in answers:
                if results[tj] is None and not answers[tj]:
                    notes[tj] = "not asked: the verdict was already settled"
            early = early or any(not a for a in answers.values())
            break
    for tj in applying:
        if results[tj] is None and tj not in notes:
            notes[tj] = f"not asked: the {settled} test settled the verdict" if settled else \
                f"not asked: --max-queries {max_queries} was spent" if max_queries else "not asked"
    findings = _findings(kit, why, results, share, notes)
    mix = _mix(kit, answers, form.same_labels)
    extra = {**(extra or {}), "sent": asker.sent, "stopped_early": early or bool(settled), **mix}
    return verdict(kit, findings, name, extra, asker.sent)


class _Asker:
    """Sends a suspect the queries, in batches, each distinct image once (its answer is used for every copy the kit
    holds), within a budget of images for all tests together; ``sent`` counts the images sent."""

    def __init__(self, suspect: Suspect, max_queries: int | None, on_answer: Callable[[int, int], None] | None,
                 sequential: bool) -> None:
        self.suspect, self.max_queries, self.on_answer, self.sequential = suspect, max_queries, on_answer, sequential
        self.known: dict[bytes, int] = {}  # an image already answered -> its label
        self.sent = 0

    def ask(self, t: Any, order: list[int], offset: int, settled: Callable[[dict[int, int]], bool]
            ) -> tuple[dict[int, int], bool]:
        """(``t``'s answers, whether it stopped early): its queries in ``order`` until the order or the budget ends;
        sequential, after each batch until ``settled`` says the test's decision can no longer change. Every answer
        goes to ``on_answer`` with its kit number (``offset`` + its index in the test)."""
        keys, got = t.fp.keys, {}
        step = self.suspect.batch_size if self.sequential or self.max_queries is not None else len(order)
        pos = 0
        while pos < len(order):
            take, send, fresh = [], [], set()
            while pos < len(order) and len(send) < step:  # the next batch of images not yet asked
                j = order[pos]
                if keys[j] not in self.known and keys[j] not in fresh:
                    if self.max_queries is not None and self.sent + len(send) >= self.max_queries:
                        break
                    fresh.add(keys[j])
                    send.append(j)
                take.append(j)
                pos += 1
            if not take:
                break
            labels = self.suspect.labels(t.fp, send) if send else []
            self.known.update((keys[j], int(lab)) for j, lab in zip(send, labels))
            self.sent += len(send)
            for j in take:
                got[j] = self.known[keys[j]]
                if self.on_answer:
                    self.on_answer(offset + j, got[j])
            if self.sequential and settled(got):
                return got, True
        return got, False


def _read(kit: Kit, suspect: Suspect) -> tuple[Form, list[str | None], list[TestResult | None]]:
    """The suspect's form, before any query: (its :class:`~charex.judge.protocol.Form`, why each test does not
    apply (None: it does), the result of each test that reads the suspect). Reading tests read first; then the
    suspect's label space is checked (a model that does not take the kit's queries is an error unless a reading
    test judged it). A suspect of another label space against a kit that can judge none such is an error naming
    ``charex weights``."""
    model = getattr(suspect, "model", None)
    first = Form(model=model)
    why: list[str | None] = [t.applies(first) if not asks(t) else None for t in kit.tests]
    results: list[TestResult | None] = [None] * len(kit.tests)
    for i, t in enumerate(kit.tests):
        if not asks(t) and why[i] is None:
            got = t.read(model)
            why[i], results[i] = (got, None) if isinstance(got, str) else (None, got)
    check = getattr(suspect, "label_space", None)
    try:
        form = Form(model, True, True, check(kit.sets[0]) if check is not None and kit.sets else None)
        form = dataclasses.replace(form, same_labels=form.why is None)
    except CharexError as e:  # the model does not take the kit's queries at all
        if not any(r is not None for r in results):
            raise
        form = Form(model, False, False, f"not applicable: {e}")
    for i, t in enumerate(kit.tests):
        if asks(t):
            why[i] = t.applies(form)
    if not form.same_labels and form.askable and all(asks(t) for t in kit.tests) and all(w is not None for w in why):
        raise CharexError(f"{getattr(suspect, 'name', 'the suspect')}: {str(form.why).removeprefix('not applicable: ')}"
                          ": the kit's query tests compare labels of the base's label space and it holds no weight "
                          "test (a kit made before issue 31, or one whose calibration models do not share the base's "
                          "architecture); judge it with `charex weights BASE SUSPECT --calibration ...` (no query, "
                          "any head), or make the kit again with twins and your labelled images (its pair test "
                          "judges suspects of another label space by their answers)")
    return form, why, results


def _findings(kit: Kit, why: list[str | None], results: list[TestResult | None], share: dict[int, float],
              notes: dict[int, str]) -> list[Finding]:
    return [Finding(t, results[i], why[i] is None, share.get(i) if results[i] is not None else None,
                    why[i] if why[i] is not None else notes.get(i)) for i, t in enumerate(kit.tests)]


def _mix(kit: Kit, answers: dict[int, dict[int, int]], same_labels: bool = True) -> dict[str, Any]:
    """``answer_mix``: how concentrated the suspect's answers were, on the natural images of the kit's tests
    (mistakes, pairs) when it answered any, else on every answer, with a warning when nearly all are one class
    (:class:`charex.judge.chance.AnswerMix`)."""
    natural = [lab for i, got in answers.items() if kit.tests[i].natural for lab in got.values()]
    mix = answer_mix(natural, True) if natural else answer_mix([lab for got in answers.values()
                                                                for lab in got.values()], False)
    return {} if mix is None else {"answer_mix": mix.to_dict(kit.classes.get("classes") if same_labels else None)}


def _result(t: Any, got: dict[int, int], stopped_at: float | None,
            max_queries: int | None) -> tuple[TestResult | None, str | None]:
    if not got:
        return None, None
    try:
        return t.result(got, stopped_at=stopped_at), None
    except CharexError as e:  # a mistake test whose budget left a section unanswered
        return None, f"not judged: {e}" + (f" (--max-queries {max_queries})" if max_queries else "")


def judge_answers(kit: Kit, answers: dict[int, int], name: str, same_labels: bool = True, *,
                  max_queries: int | None = None, seed: int = 0) -> KitVerdict:
    """The verdict from answers collected elsewhere (kit query index -> label, e.g. from
    :func:`charex.judge.answers.read_answers`): each test that applies judged on what it got; a test with no answers
    is named as not answered. A query whose image is the same as an answered one's (``charex export`` writes each
    image once) takes that answer. ``same_labels`` False: the answers are in another label space (read with
    ``any_labels``), so only the tests of another label space apply (the pair test). ``max_queries``: judge on the
    first N images in the order :func:`judge` sends them (``seed``), as an API budget would; the rest is unread."""
    if not answers:
        raise CharexError("no answers to verify")
    if max_queries is not None and max_queries < 1:
        raise CharexError(f"--max-queries must be >= 1, got {max_queries}")
    form = Form(None, same_labels, True, None if same_labels else
                "not applicable: the answers use labels outside the base's classes (another label space)")
    why = [t.applies(form) for t in kit.tests]
    full = with_repeats(answers, kit.keys)
    if max_queries is not None:
        full = _first_sent(kit, full, [i for i, w in enumerate(why) if w is None], max_queries, seed)
    answered = len(answers) if max_queries is None else len({kit.keys[i] for i in full})
    per_test = dict(zip([i for i, t in enumerate(kit.tests) if asks(t)], kit.split(full)))
    applying = [i for i, w in enumerate(why) if w is None]
    share = dict(zip(applying, shares([kit.tests[i] for i in applying])))
    results: list[TestResult | None] = [None] * len(kit.tests)
    notes: dict[int, str] = {}
    for i, got in per_test.items():
        r, note = _result(kit.tests[i], got, None, max_queries) if why[i] is None else (None, None)
        results[i] = r
        if note or not got:
            notes[i] = note or "not answered"
    mix = _mix(kit, {i: got if why[i] is None else {} for i, got in per_test.items()}, same_labels)
    extra = {"answered": answered, "examples": kit.n, "label_space": "the base's" if same_labels else "another",
             **({"max_queries": max_queries} if max_queries is not None else {}), **mix}
    return verdict(kit, _findings(kit, why, results, share, notes), name, extra, answered)


def _plan(kit: Kit, applying: list[int], seed: int) -> list[tuple[int, list[int], int]]:
    """The send plan of the applying tests that ask: (test index, its queries in send order, its first query's kit
    number), cheapest test first; a test's order is seeded by its place among the kit's asking tests."""
    place = {ti: k for k, ti in enumerate(i for i, t in enumerate(kit.tests) if asks(t))}
    return [(ti, kit.tests[ti].order(seed + place[ti]), kit.offsets[place[ti]])
            for ti in sorted((i for i in applying if i in place), key=lambda i: kit.tests[i].n)]


def _first_sent(kit: Kit, answers: dict[int, int], applying: list[int], budget: int, seed: int) -> dict[int, int]:
    """The answers to the first ``budget`` distinct images in the order :func:`judge` sends the applying tests'
    queries (:func:`_plan`), and every copy of those images."""
    keys, seen, kept = kit.keys, set(), {}
    for _, order, offset in _plan(kit, applying, seed):
        for j in order:
            q = offset + j
            if q not in answers:
                continue
            if keys[q] not in seen:
                if len(seen) >= budget:
                    return kept
                seen.add(keys[q])
            kept[q] = answers[q]
    return kept


def judge_remote(kit: Kit, remote: Any, *, name: str | None = None, max_queries: int | None = None,
                 audit: str | Path | None = None, seed: int = 0, sequential: bool = True,
                 same_labels: bool = True) -> KitVerdict:
    """Ask a remote model (:class:`charex.models.remote.RemoteModel`) the kit's queries and judge it.

    Sequential by default: each test stops once its decision is settled (its p is then a bound) and the kit once
    the verdict is "derived"; ``max_queries`` caps what is sent. ``audit`` (a new file) receives every answer as a
    JSON line (time, file ``NNNN.png`` in the kit's numbering, label, kit), so that ``charex verify KIT --answers
    AUDIT`` recomputes the verdict offline (answers of another kit are refused); it appears whole, or as
    ``AUDIT.partial`` when the run failed.
    """
    name = name or remote.url
    audit_path = Path(audit) if audit else None
    if audit_path is not None and audit_path.exists():
        raise CharexError(f"audit file {audit_path} exists: choose a new file (one audit per run, so that "
                          "`charex verify FP --answers AUDIT` recomputes exactly this verdict)")
    nc = kit.classes["num_classes"]
    remote.check(tuple(kit.sets[0].images.shape[1:]),
                 int(nc) if same_labels and isinstance(nc, int) and nc > 0 else None)
    tmp = audit_path.with_name(f".{audit_path.name}.part") if audit_path else None
    fh = tmp.open("w") if tmp else None
    got, kit_id = 0, kit.id

    def log(i: int, label: int) -> None:
        nonlocal got
        got += 1
        if fh:
            fh.write(json.dumps({"time": time.time(), "file": f"{i:04d}.png", "label": label, "kit": kit_id}) + "\n")
            fh.flush()

    ok = False
    try:
        v = judge(kit, RemoteSuspect(remote, same_labels), name, max_queries=max_queries, sequential=sequential, seed=seed,
                  on_answer=log, extra={"datatype": remote.datatype, "layout": remote.layout, "scale": remote.scale,
                                        "batch_size": remote.batch_size})
        ok = True
    except CharexError as e:
        if tmp is not None and got:
            partial = audit_path.with_name(audit_path.name + ".partial")  # type: ignore[union-attr]
            raise CharexError(f"{e} ({got} answers received before the failure are in {partial})") from e
        raise
    finally:
        if fh:
            fh.close()
        if tmp is not None:
            if ok:
                os.replace(tmp, audit_path)  # type: ignore[arg-type]
            elif got:
                os.replace(tmp, audit_path.with_name(audit_path.name + ".partial"))  # type: ignore[union-attr]
            else:
                tmp.unlink(missing_ok=True)
    return v


def verify_remote(fp: FingerprintSet, remote: Any, **kwargs: Any) -> Verdict:
    """:func:`judge_remote` for one count-based fingerprint, as a :class:`~charex.types.Verdict` (the API before
    kits): matches, n (answered), p (a bound when it stopped early), and the remote settings in ``extra``."""
    return as_verdict(judge_remote(one_test(fp), remote, **kwargs),
                      ("answered", "examples", "sent", "stopped_early", "datatype", "layout", "scale", "batch_size",
                       "p_value_is_bound"))


def as_verdict(v: KitVerdict, keep: tuple[str, ...] = ()) -> Verdict:
    """A one-count-test kit's verdict as a :class:`~charex.types.Verdict` (the API before kits): matches, n, p, the
    null's rate and threshold, and the fields ``keep`` names (with the chance guard's) in ``extra``."""
    d = v.to_dict()
    extra = {k: d[k] for k in (*keep, "chance_p_value", "calibrated_p_value") if k in d}
    return Verdict(suspect=v.suspect, match_rate=d["match_rate"], matches=d["matches"], n=d["n"],
                   null_rate=d.get("null_rate"), threshold=d.get("threshold"), p_value=v.p_value,
                   decision=v.decision, extra=extra)


def verify(fp: FingerprintSet, suspects: Any) -> list[Verdict]:
    """Match rate of each suspect and, if ``fp`` is calibrated, a verdict with a p-value: ``fp`` judged as a kit of
    one test through :func:`judge` (every query asked). Without calibration the decision is ``uncalibrated``: rates
    only, no verdict.

    Example:
        >>> [v.decision for v in verify(fp, {"suspect": model})]  # doctest: +SKIP
        ['derived']
    """
    from ..models.probe import named_models

    require_counted(fp)
    kit, shape = one_test(fp), fp.meta.get("input_shape", list(fp.images.shape[1:]))
    out = []
    for name, m in named_models(suspects):
        probe_model(m, shape, fp.meta.get("num_classes"), name=name)  # its class count too: counts need the base's
        out.append(as_verdict(judge(kit, LocalSuspect(m, name, probed=True), name, stop_when_derived=False)))
    return out


def verify_answers(fp: FingerprintSet, answers: dict[int, int], name: str = "answers") -> Verdict:
    """A verdict from labels collected elsewhere (``charex.judge.answers.read_answers``): example index -> label,
    ``fp`` judged as a kit of one test. With m of the n examples answered, the test uses those m: the calibrated
    null is the same per example, so the suspect's match count K_m follows it at m examples and p = P(K_m >= k).
    ``extra`` records ``answered`` (m) and ``examples`` (n).

    Example:
        >>> v = verify_answers(fp, read_answers("answers.csv", fp), "api.example.com")  # doctest: +SKIP
    """
    require_counted(fp)
    return as_verdict(judge_answers(one_test(fp), answers, name), ("answered", "examples"))
