"""Making a kit: every test that fits what the owner gave, each calibrated once, in one file (charex.judge.kit).

- The characteristic examples (the default preset, pushed away from the references and twins): weight copies.
- With twins (the base's recipe trained again with other seeds) and labelled images: the mistake test, students;
  and the pair test, suspects that answer another task (the backbone under a new head) by their labels alone.

Both are calibrated on the same independent calibration models, which may be neither references nor twins.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Sequence

import torch
from torch import nn

from .._version import __version__
from ..errors import CharexError
from ..fingerprint import data_digest
from ..judge.kit import Kit
from ..judge.protocol import RELATIONS
from ..judge.registry import test_for
from ..judge.weights import WeightTest, refuse_shared_origin
from ..models.probe import Models, named_models
from ..types import GenerationConfig
from .generate import generate
from .mistakes import mistake_queries
from .pairs import pair_queries

NO_TWINS = ("no twins given: the kit holds the characteristic examples only, which catch weight copies (pruned, "
            "fine-tuned, quantized) but not students distilled from the base's answers. A twin is your recipe for "
            "the base trained again with another seed (about 7-12 minutes each for the bundled CNN on 2 CPU cores; "
            "docs/research-record.md, Students); give --twin to cover students.")


FROM_SCRATCH = ("the kit takes the base as trained from scratch: a model that only shares its starting point (a "
                "public checkpoint it was fine-tuned from, that checkpoint's other fine-tunes, a model grown from the "
                "same init) can be called derived; a base fine-tuned from a checkpoint needs --parent")


def card_parent(base: Any) -> str | None:
    """A note when the base's card says it was fine-tuned from another model (``charex derive finetune`` records its
    lineage) and no parent was given: that checkpoint and its other fine-tunes would be called derived."""
    card = getattr(base, "card", None) or {}
    lineage, parent = str(card.get("lineage") or ""), card.get("parent")
    if not parent or "|" not in lineage or not lineage.rsplit("|", 1)[1].startswith("finetune("):
        return None
    return (f"the base's card says it was fine-tuned from {parent}: without --parent that checkpoint and its other "
            "fine-tunes are judged by their closeness to the base and called derived; give it as --parent")


def make_kit(base: nn.Module, calibration: Models, *, references: Models = (), twins: Models = (),
             images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
             config: GenerationConfig | None = None, level: float = 0.01, max_agree: int = 3,
             per_model: int | None = None, weight_null: Models = (), pairs: int = 200,
             progress: bool = True, parent: nn.Module | None = None, parent_name: str = "the parent") -> Kit:
    """Every test that fits what is given, calibrated on ``calibration``, as one :class:`~charex.judge.kit.Kit`.

    Args:
        base: the owner's model ([0, 1] pixels in). calibration: two or more independent models (other seeds and
            architectures), used for nothing else. references: independent models the examples are pushed away from
            (and that help judge which mistakes are distinctive). twins: the base's recipe trained with other seeds
            (the mistake test; also references for the examples). images, labels: the owner's labelled images
            (uint8 N x C x H x W, N labels), needed with twins. config: the examples' settings (default: the
            defaults). level: the combined verdict's level. max_agree, per_model: the mistake test's
            (:func:`charex.make.mistakes.mistake_queries`). weight_null: further independent models of the
            base's architecture for the weight test's null alone (the calibration models, references and twins that
            line up with the base are used too; :func:`weight_test`). pairs: the pair test's slots (one pair of
            the base's and one of each twin's per slot; :func:`pair_test`), made with the twins. parent: the
            checkpoint the base was fine-tuned from (``parent_name`` its name): the kit then asks what the base's
            training added (:func:`origin_test`): its twins and calibration models must be fine-tunes of the parent
            (siblings), the examples are pushed away from the parent too, and the update test stands in for the
            weight test.

    Raises:
        CharexError: fewer than two calibration models; twins without labelled images; a calibration model, twin or
            reference that shares the base's origin (its units match the base's at a mean cosine of at least
            :data:`charex.judge.weights.SHARED_ORIGIN`: a copy, the base's parent, a sibling), before any generation.

    Example:
        >>> kit = make_kit(base, {"c1": c1, "c2": c2}, references=[r1], twins=[t1], images=x, labels=y)  # doctest: +SKIP
        >>> kit.save("kit.safetensors")  # doctest: +SKIP
    """
    cal = dict(named_models(calibration))
    refs, tws = dict(named_models(references)), dict(named_models(twins))
    if len(cal) < 2:
        raise CharexError("a kit needs two or more independent calibration models (--calibration)")
    # first (seconds): it refuses a model that shares the base's origin before minutes of generation
    independents = {**cal, **refs, **tws, **dict(named_models(weight_null))}
    if parent is None:
        weights, no_weights = weight_test(base, independents)
        origin: dict[str, Any] = {"parent": None, "note": card_parent(base) or FROM_SCRATCH}
    else:
        weights, no_weights = origin_test(base, parent, parent_name, cal, tws, independents)
        refs = {**refs, parent_name: parent}
        origin = {"parent": parent_name, "parent_cosine": weights.sketch.closeness}
    examples = generate(base, config or GenerationConfig(), references={**refs, **tws}, progress=progress)
    tests = [test_for(examples).calibrate(cal, level)]
    meta: dict[str, Any] = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "charex_version": __version__, "missing": [], "origin": origin}
    if tws:
        if images is None or labels is None:
            raise CharexError("the mistake test needs your labelled images (--data) with the twins")
        m = mistake_queries(base, list(tws.values()), images, labels, references=list(refs.values()),
                            max_agree=max_agree, per_model=per_model)
        m.meta["twins"] = [{"name": n, "digest": r["digest"]} for n, r in zip(tws, m.meta["twins"])]
        m.meta["references"] = [{"name": n, "digest": r["digest"]} for n, r in zip(refs, m.meta["references"])]
        m.meta["data_digest"] = data_digest(images, labels)
        tests.append(test_for(m).calibrate(cal, level))
        pt, why = pair_test(base, tws, images, labels, cal, level, pairs=pairs)
        if pt is not None:
            tests.append(pt)
        else:
            meta["missing"].append(why)
    else:
        meta["missing"].append(NO_TWINS)
    if no_weights:
        meta["missing"].append(no_weights)
    return Kit(tests=((weights,) if weights else ()) + tuple(tests), level=level, meta=meta)


def pair_test(base: nn.Module, twins: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
              calibration: dict[str, nn.Module], level: float, pairs: int = 200) -> tuple[Any, str | None]:
    """The kit's pair test (suspects answering another task, :mod:`charex.make.pairs`), calibrated: (its
    fingerprint set, None), or (None, why) when the base's or a twin's penultimate features cannot be read or fewer
    than 50 slots are found (between 50 and ``pairs``: the slots found)."""
    try:
        fp = pair_queries(base, list(twins.values()), images, labels, pairs=pairs, min_pairs=50)
    except CharexError as e:
        return None, (f"no pair test: {e}. It judges suspects that answer another task (your backbone under a new "
                      "head) by their labels alone")
    fp.meta["twins"] = [{"name": n, "digest": r["digest"]} for n, r in zip(twins, fp.meta["twins"])]
    fp.meta["data_digest"] = data_digest(images, labels)
    return test_for(fp).calibrate(calibration, level), None


def weight_test(base: nn.Module, independents: dict[str, nn.Module], seed: int = 0) -> tuple[Any, str | None]:
    """The kit's weight test: the base's sketch and its null from the given independent models whose layers all line
    up with the base's (calibration models, references and twins alike: none takes part in the sketch, which is a
    function of the base alone). (None, why) when the base's weights cannot be read or fewer than two models line
    up."""
    try:
        test = WeightTest.make(base, independents, seed)
    except CharexError as e:
        return None, (f"no weight test: {e}. It judges open-weight suspects (fine-tunes, new heads for other tasks) "
                      "with no query; give two or more independent models of your architecture (other seeds) "
                      "as --calibration or --twin to add it")
    refuse_shared_origin(test.null, "calibration model, twin or reference")
    return test, None


COPY_OF_BASE = 0.9  # a sibling whose change from the parent has this cosine with the base's carries the base's own


def origin_test(base: nn.Module, parent: nn.Module, name: str, calibration: dict[str, nn.Module],
                twins: dict[str, nn.Module], models: dict[str, nn.Module]) -> tuple[Any, None]:
    """The update test of a kit whose base was fine-tuned from ``parent`` (:mod:`charex.judge.updates`), its null from
    every given model fine-tuned from the parent; an error naming a calibration model or twin that does not descend
    from the parent (the query tests' nulls would then be fitted on strangers, and the parent's other fine-tunes
    accused) or that carries the base's own update (a copy of the base)."""
    from ..judge.updates import UpdateTest

    test, scores = UpdateTest.make(base, parent, models, name=name)  # every model scored once, the null's and these
    for role, group in (("calibration model", calibration), ("twin", twins)):
        for n in group:
            s = scores[n]
            if s.relation != "sibling":
                raise CharexError(f"{n}: {RELATIONS[s.relation]} (its units match {name}'s at {s.closeness:.3f}), so "
                                  f"it cannot serve as a {role} of a base fine-tuned from {name}: give fine-tunes of "
                                  f"{name} (your recipe from it with other seeds, or others' fine-tunes of it)")
            if s.score.statistic >= COPY_OF_BASE:
                raise CharexError(f"{n}: its change from {name} has cosine {s.score.statistic:.3f} with the base's own: "
                                  f"it is a copy of the base, not a sibling, and cannot serve as a {role}")
    return test, None


def describe(kit: Kit, out: Any = None) -> None:
    """What a kit holds, for people: each test's own description, then what is missing."""
    out = out or sys.stdout
    for t in kit.tests:
        for line in t.describe():
            print(line, file=out)
    for note in kit.meta.get("missing", []):
        print(f"  missing    {note}", file=out)


def refuse_overlap(roles: dict[str, Sequence[str]]) -> None:
    """A model named in two roles (calibration and reference or twin) is an error naming it."""
    seen: dict[str, str] = {}
    for role, specs in roles.items():
        for s in specs:
            if s in seen and seen[s] != role:
                raise CharexError(f"{s} is given both as {seen[s]} and as {role}: a calibration model must take no "
                                  "part in making the tests")
            seen[s] = role
