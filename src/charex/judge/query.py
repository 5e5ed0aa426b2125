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
from ..fingerprint import FingerprintSet
from ..types import Verdict
from .kit import Kit, KitVerdict, combine
from .tests import MistakeTest, PairTest, TestResult


NO_WEIGHTS = "not applicable: no weights to read (answers or an endpoint)"


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
        from ..models.probe import probe_model

        want = fp.meta.get("num_classes")
        got = probe_model(self.model, fp.meta.get("input_shape", list(fp.images.shape[1:])), None, name=self.name)
        self._probed = True  # its input shape is checked; its class count decides which tests apply
        if not self.same_labels:
            return f"not applicable: the suspect answers another task ({got} classes; --other-labels)"
        if want is None or got == want:
            return None
        return f"not applicable: the suspect answers {got} classes, the base {want} (another label space)"

    def labels(self, fp: FingerprintSet, idx: list[int]) -> list[int]:
        from ..models.probe import probe_model
        from .verify import predict

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
    """Ask ``suspect`` the kit's queries and judge it.

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
    wres, wnote, qnote, askable = _weights_first(kit, suspect)
    same = qnote is None
    applies = kit.applies(same, askable)
    if not any(applies):  # another label space and no pair test: the weight test alone, or nothing applies
        return combine(kit, [None] * len(kit.tests), name, {**(extra or {}), "sent": 0, "stopped_early": False},
                       weights=wres, weights_note=wnote, queries_apply=False, queries_note=qnote, askable=askable)
    tests = kit.judges()
    wshare, qshare = kit.shares(wres is not None, same)
    share = kit.level * qshare  # each query test's level under the kit's Bonferroni
    answers: list[dict[int, int]] = [{} for _ in tests]
    stopped: list[float | None] = [None] * len(tests)
    results: list[TestResult | None] = [None] * len(tests)
    notes: list[str | None] = [None] * len(tests)
    sent, early = 0, False
    offsets = kit.offsets
    known: dict[bytes, int] = {}  # an image already answered -> its label
    settled = wres is not None and wres.p_value is not None and stop_when_derived and \
        wres.p_value / wshare <= kit.level
    for ti in sorted((i for i in range(len(tests)) if applies[i]), key=lambda i: kit.tests[i].n) \
            if not settled else ():  # cheapest first
        t = tests[ti]
        order = t.order(seed + ti)
        keys = t.fp.keys
        step = suspect.batch_size if sequential or max_queries is not None else len(order)  # else: one call
        pos = 0
        while pos < len(order):
            take, send, fresh = [], [], set()
            while pos < len(order) and len(send) < step:  # the next batch of images not yet asked
                j = order[pos]
                if keys[j] not in known and keys[j] not in fresh:
                    if max_queries is not None and sent + len(send) >= max_queries:
                        break
                    fresh.add(keys[j])
                    send.append(j)
                take.append(j)
                pos += 1
            if not take:
                break
            known.update((keys[j], int(lab)) for j, lab in zip(send, suspect.labels(t.fp, send) if send else []))
            for j in take:
                answers[ti][j] = known[keys[j]]
                if on_answer:
                    on_answer(offsets[ti] + j, known[keys[j]])
            sent += len(send)
            if sequential and len(answers[ti]) < t.fp.n and t.settled(answers[ti], share) is not None:
                stopped[ti], early = share, True
                break
        results[ti], notes[ti] = _result(t, answers[ti], stopped[ti], max_queries)
        if (sequential or stop_when_derived) and any(
                r is not None and r.p_value is not None and r.p_value / qshare <= kit.level for r in results):
            for tj, r in enumerate(results):
                if r is None and not answers[tj]:
                    notes[tj] = "not asked: the verdict was already settled"
            early = early or any(not a for a in answers)
            break
    for tj in range(len(tests)):
        if results[tj] is None and notes[tj] is None and applies[tj]:
            notes[tj] = "not asked: the weight test settled the verdict" if settled else \
                f"not asked: --max-queries {max_queries} was spent" if max_queries else "not asked"
    verdict = combine(kit, results, name, {**(extra or {}), "sent": sent, "stopped_early": early or settled,
                                           **_mix(kit, answers, same)}, notes, weights=wres, weights_note=wnote,
                      queries_apply=same, queries_note=qnote)
    return dataclasses.replace(verdict, queries=sent)


def _weights_first(kit: Kit, suspect: Suspect) -> tuple[TestResult | None, str | None, str | None, bool]:
    """The tests that read the suspect rather than ask it, before any query: (the weight test's result when it
    applies, why it does not, why the tests of the base's labels do not apply: another label space, whether the
    suspect takes the kit's queries at all). A suspect of another label space against a kit with neither a weight
    test nor a pair test is an error naming ``charex weights``."""
    model = getattr(suspect, "model", None)
    wres = wnote = None
    if kit.weights is not None:
        score, wnote = kit.weights.score(model)
        wres = None if score is None else kit.weights.result(score)
    check = getattr(suspect, "label_space", None)
    askable = True
    try:
        qnote = check(kit.tests[0]) if check is not None else None
    except CharexError as e:  # the model does not take the kit's queries at all
        if wres is None:
            raise
        qnote, askable = f"not applicable: {e}", False
    if qnote is not None and kit.weights is None and not any(kit.applies(False)):
        raise CharexError(f"{getattr(suspect, 'name', 'the suspect')}: {qnote.removeprefix('not applicable: ')}: the "
                          "kit's query tests compare labels of the base's label space and it holds no weight test (a "
                          "kit made before issue 31, or one whose calibration models do not share the base's "
                          "architecture); judge it with `charex weights BASE SUSPECT --calibration ...` (no query, "
                          "any head), or make the kit again with twins and your labelled images (its pair test "
                          "judges suspects of another label space by their answers)")
    return wres, wnote, qnote, askable


def _mix(kit: Kit, answers: list[dict[int, int]], same_labels: bool = True) -> dict[str, Any]:
    """``answer_mix``: how concentrated the suspect's answers were, on the natural images of the kit's mistake tests
    when it answered any, else on the examples, with a warning when nearly all are one class
    (:class:`charex.judge.chance.AnswerMix`)."""
    from .chance import answer_mix

    natural = [lab for t, got in zip(kit.judges(), answers) if isinstance(t, (MistakeTest, PairTest))
               for lab in got.values()]
    mix = answer_mix(natural, True) if natural else answer_mix([lab for got in answers for lab in got.values()],
                                                                 False)
    return {} if mix is None else {"answer_mix": mix.to_dict(kit.classes.get("classes") if same_labels else None)}


def _result(t: Any, got: dict[int, int], stopped_at: float | None,
            max_queries: int | None) -> tuple[TestResult | None, str | None]:
    if not got:
        return None, None
    try:
        return t.result(got, stopped_at=stopped_at), None
    except CharexError as e:  # a mistake test whose budget left a section unanswered
        return None, f"not judged: {e}" + (f" (--max-queries {max_queries})" if max_queries else "")


def judge_answers(kit: Kit, answers: dict[int, int], name: str, same_labels: bool = True) -> KitVerdict:
    """The verdict from answers collected elsewhere (kit query index -> label, e.g. from
    :func:`charex.judge.answers.read_answers`): each test that applies judged on what it got; a test with no answers
    is named as not answered. A query whose image is the same as an answered one's (``charex export`` writes each
    image once) takes that answer. ``same_labels`` False: the answers are in another label space (read with
    ``any_labels``), so only the pair test applies."""
    if not answers:
        raise CharexError("no answers to verify")
    from .answers import with_repeats

    answered = len(answers)
    per_test = kit.split(with_repeats(answers, kit.keys))
    applies = kit.applies(same_labels)
    mix = _mix(kit, [got if a else {} for got, a in zip(per_test, applies)], same_labels)
    results, notes = [], []
    for t, got, a in zip(kit.judges(), per_test, applies):
        r, note = _result(t, got, None, None) if a else (None, None)
        results.append(r)
        notes.append(note or (None if got else "not answered"))
    extra = {"answered": answered, "examples": kit.n, "label_space": "the base's" if same_labels else "another",
             **mix}
    note = None if same_labels else ("not applicable: the answers use labels outside the base's classes (another "
                                     "label space)")
    return dataclasses.replace(combine(kit, results, name, extra, notes, weights_note=NO_WEIGHTS,
                                       queries_apply=same_labels, queries_note=note), queries=answered)


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
    remote.check(tuple(kit.tests[0].images.shape[1:]),
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
    v = judge_remote(Kit(tests=(fp,), level=float((fp.calibration or {}).get("level", 0.01)), single=True), remote,
                     **kwargs)
    d = v.to_dict()
    keep = {k: d[k] for k in ("answered", "examples", "sent", "stopped_early", "datatype", "layout", "scale",
                              "batch_size", "p_value_is_bound") if k in d}
    return Verdict(suspect=v.suspect, match_rate=d["match_rate"], matches=d["matches"], n=d["n"],
                   null_rate=d.get("null_rate"), threshold=d.get("threshold"), p_value=v.p_value,
                   decision=v.decision, extra=keep)
