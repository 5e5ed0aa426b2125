"""The update test (issue 41): for a base fine-tuned from a public parent, does the suspect carry what the base's own
training added, its update from the parent, and not only the parent itself? No query is sent.

The weight test (:mod:`charex.judge.weights`) measures closeness to the base: the parent and every other fine-tune of
it (siblings) sit at 0.95-0.97, as close as a copy, and are accused. This test measures closeness to the base's
*update*. The suspect's units are lined up with the parent's by the weight test's chain of matchings
(:func:`~charex.judge.weights.match_units`, in a seeded sketch of the parent: permutations, rescaling, folded
BatchNorm, renamed or float16 state dicts change nothing). For unit ``u`` of layer ``l``, with ``p`` the parent's unit
row and ``a``, ``s`` the base's and the suspect's (rows at unit norm, :func:`~charex.judge.weights._rows`, in the
sketch's directions), the update is the part of the row that left the parent's direction::

    U_a = a - (a . p) p        U_s = s - (s . p) p

and the layer's statistic is the cosine of the two updates over the whole layer, sum_u U_s . U_a / sqrt(sum_u |U_s|^2
sum_u |U_a|^2): near 1 for a copy of the base (it keeps the base's update, plus its own edits), 0 for the parent
(no update; taken as 0) and for a model that does not descend from the parent (its rows are no small move from the
parent's), and whatever a sibling shares with the base's update through a common task and data. The classifier head
is compared too when it lines up (an owner who fine-tuned the head alone changed nothing else); a suspect with another
head is judged on the layers before it.

The null is fitted on siblings (models fine-tuned from the same parent by the owner's recipe or others', the owner's
twins and calibration models that share the parent): the Student-t prediction over them (:class:`WeightNull`, the
weight test's rule; valid when siblings' statistics are normal around their mean), so what a sibling shares with the
base through the task is in the null, and a model outside the family (statistic near 0) sits below it. The finding
names the relation: ``parent`` (its units match the parent's and it moved less than :data:`PARENT_RATIO` of the
base's update away from it), ``sibling`` (it descends from the parent, :data:`SHARED_ORIGIN`), or ``outside``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import CharexError, FingerprintFileError
from ..models.probe import named_models
from .audit import AuditReport, Check
from .protocol import RELATIONS, TestResult
from .weights import (SHARED_ORIGIN, WEIGHT_SHARE, ReadingTest, WeightNull, WeightScore, _checked, _project, _rows,
                      layer_weights, match_units, remeasured, sketch_dims)

__all__ = ["PARENT_RATIO", "RELATIONS", "UpdateScore", "UpdateSketch", "UpdateTest", "calibrate_updates", "update_score"]

# a suspect whose units match the parent's and whose update from it is smaller than this fraction of the base's is
# the parent itself (or a light edit of it): the parent sits at 0, light fine-tunes of it (lr 0.005-0.01, one epoch)
# at 0.08-0.16, the base's twins at 1.0 (validation family v-*)
PARENT_RATIO = 0.25
UNMOVED = 1e-6  # a layer whose base update has less energy per unit than this was not trained by the base's owner


@dataclass(frozen=True)
class UpdateSketch:
    """What a kit keeps for the update test: per layer of the parent (head included), its name, its weight's shape,
    the parent's unit rows and the base's update from them (units x m each, in ``m`` = min(64, inputs / 2) seeded
    directions, :func:`~charex.judge.weights.directions`).

    Attributes:
        layers: (layer name, weight shape, parent rows, base update) per layer.
        seed: the directions' seed.
        closeness: the base's mean matched cosine to the parent (sketch space).
        parent: the parent's name as the owner gave it.
    """

    layers: tuple[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor], ...]
    seed: int = 0
    closeness: float = 1.0
    parent: str = ""

    @classmethod
    def of(cls, base: Any, parent: Any, seed: int = 0, name: str = "the parent") -> "UpdateSketch":
        """The sketch of ``base``'s update from ``parent`` (models or state dicts); an error naming the problem when
        the base does not descend from the parent (its units match the parent's at a mean cosine under
        :data:`SHARED_ORIGIN`) or has fewer than three weight layers."""
        lp = _checked(layer_weights(parent), f"{name}")
        if len(lp) < 3:
            raise CharexError(f"the update test needs three or more weight layers; {name} has {len(lp)}")
        rows = [(k, tuple(w.shape), _project(_rows(w, None), i, seed)) for i, (k, w) in enumerate(lp)]
        matched, skipped = match_units(rows, _checked(layer_weights(base), "the base"), seed)
        if len(matched) < max(3, len(rows) - 1):  # the base may have its own head (another task)
            raise CharexError(f"the base's layers do not line up with {name}'s ({'; '.join(skipped[:2])}): give the "
                              "checkpoint the base was fine-tuned from")
        closeness = float(np.mean([m.cosine for m in matched]))
        if closeness < SHARED_ORIGIN:
            raise CharexError(f"the base's units match {name}'s at a mean cosine of {closeness:.3f} (independent models: "
                              f"0.2-0.35; a fine-tune of a model: {SHARED_ORIGIN} or more): the base was not fine-tuned "
                              f"from {name}")
        layers = []
        for (k, shape, pp), m in zip(rows, matched):
            pa = torch.zeros_like(pp)
            pa[torch.as_tensor(m.units[:, 0])] = m.rows[torch.as_tensor(m.units[:, 1])]
            layers.append((k, shape, pp, pa - (pa * pp).sum(1, keepdim=True) * pp))
        return cls(tuple(layers), seed, closeness, name)


@dataclass(frozen=True)
class UpdateScore:
    """The suspect's update cosine per layer lined up (:class:`WeightScore`, whose statistic is then the mean update
    cosine), how close its units are to the parent's, and its update's size against the base's.

    Attributes:
        score: per layer the base's training moved (name, suspect layer, update cosine, units), and the layers
            that could not be lined up.
        closeness: the suspect's mean matched cosine to the parent.
        ratio: sqrt(sum |U_s|^2 / sum |U_a|^2) over the layers lined up.
    """

    score: WeightScore
    closeness: float
    ratio: float
    relation: str = field(default="")
    matched: int = 0  # the parent's layers lined up (the statistic is over those the base's training moved)

    @property
    def applicable(self) -> bool:
        """Whether half or more of the parent's layers (three at least) lined up with the suspect's."""
        return self.matched >= max(3, (self.matched + len(self.score.skipped) + 1) // 2)

    def to_dict(self) -> dict[str, Any]:
        return {**self.score.to_dict(), "applicable": self.applicable, "layers_matched": self.matched,
                "parent_cosine": self.closeness, "update_ratio": self.ratio, "relation": self.relation}


def update_score(sketch: UpdateSketch, suspect: Any) -> UpdateScore:
    """Line the suspect up with the parent's sketch and compare its update with the base's (module docs).

    Example:
        >>> sk = UpdateSketch.of(load_model("my-finetune.safetensors"), load_model("public.safetensors"))  # doctest: +SKIP
        >>> update_score(sk, load_model("public.safetensors")).relation  # doctest: +SKIP
        'parent'
    """
    ls = _checked(layer_weights(suspect), "the suspect")
    if len(ls) < 3:
        return UpdateScore(WeightScore((), (f"fewer than three weight layers (suspect {len(ls)})",)), 0.0, 0.0,
                           "outside")
    matched, skipped = match_units([(k, s, pp) for k, s, pp, _ in sketch.layers], ls, sketch.seed)
    out, num_a, num_s = [], 0.0, 0.0
    for (k, _, pp, ua), m in zip(sketch.layers, matched):
        b, s = torch.as_tensor(m.units[:, 0]), torch.as_tensor(m.units[:, 1])
        p, u = pp[b], ua[b]
        rs = m.rows[s]
        us = rs - (rs * p).sum(1, keepdim=True) * p
        da, ds = float((u * u).sum()), float((us * us).sum())
        num_a, num_s = num_a + da, num_s + ds
        if da <= UNMOVED * len(b):  # a layer the base's training left as it was (a head-only fine-tune's body)
            continue
        cos = float((us * u).sum()) / math.sqrt(da * ds) if ds > 1e-12 else 0.0
        out.append((k, m.suspect, cos, len(b)))
    closeness = float(np.mean([m.cosine for m in matched])) if matched else 0.0
    ratio = math.sqrt(num_s / num_a) if num_a > 0 else float("inf")
    relation = "outside" if closeness < SHARED_ORIGIN else "parent" if ratio < PARENT_RATIO else "sibling"
    # the head: a suspect with another head (another task) is judged on the layers before it
    skipped = [w for w in skipped if not w.startswith(f"{sketch.layers[-1][0]}:")]
    return UpdateScore(WeightScore(tuple(out), tuple(skipped)), closeness, ratio, relation, len(matched))


def calibrate_updates(sketch: UpdateSketch, siblings: Mapping[str, Any]) -> tuple[WeightNull, dict[str, UpdateScore]]:
    """The update null from the given models that descend from the parent (``name -> model``; two or more needed) and
    every given model's score (those left out of the null: not in its ``names``; they do not descend from the parent,
    or their layers do not all line up)."""
    scores = {str(n): update_score(sketch, m) for n, m in siblings.items()}
    kept, left = [], []
    for n, s in scores.items():
        (kept if s.relation == "sibling" and not s.score.skipped and s.matched == len(sketch.layers)
         else left).append((n, s))
    if len(kept) < 2:
        raise CharexError(f"the update test needs two or more siblings (models fine-tuned from {sketch.parent}: your "
                          f"recipe from it with other seeds, or others' fine-tunes of it) whose layers all line up; "
                          f"{len(kept)} given" + (f" ({', '.join(f'{n}: {s.relation}' for n, s in left)} left out)"
                                                  if left else ""))
    layers = tuple((row[0], tuple(s.score.layers[i][2] for _, s in kept)) for i, row in enumerate(kept[0][1].score.layers))
    if not layers:
        raise CharexError(f"the base's weights equal {sketch.parent}'s in every layer the update test reads: nothing "
                          "the base's training added can be told from its parent")
    return WeightNull(layers, tuple(n for n, _ in kept)), scores


class UpdateTest(ReadingTest):
    """The update test behind the kit's interface (module docs): it reads a local suspect's parameters, 0 queries;
    p from the null of siblings stored beside the sketch; :data:`WEIGHT_SHARE` of the level when a query test
    applies too. A kit made with ``--parent`` holds it in place of the weight test."""

    kind = name = "updates"
    column = "updates: cosine"

    @classmethod
    def make(cls, base: Any, parent: Any, siblings: Mapping[str, Any], seed: int = 0, name: str = "the parent",
             share: float = WEIGHT_SHARE) -> tuple["UpdateTest", dict[str, UpdateScore]]:
        """The test from the base, its parent and models fine-tuned from the parent (the null); also every given
        model's score (:func:`calibrate_updates`: those not in the null's names were left out)."""
        sketch = UpdateSketch.of(base, parent, seed, name)
        null, scores = calibrate_updates(sketch, siblings)
        return cls(sketch, null, share), scores

    def read(self, model: Any) -> TestResult | str:
        """The suspect's mean update cosine, its calibrated p and its relation to the parent; or why it does not
        apply (no weights charex can read; too few layers lined up with the parent's)."""
        why = self.unreadable(model)
        if why:
            return why
        s = update_score(self.sketch, model)
        p = self.null.predict({b: c for b, _, c, _ in s.score.layers}) if s.applicable else None
        if p is None:
            return (f"not applicable: {s.matched} of the parent's {len(self.sketch.layers)} layers line up "
                    "(another architecture)")
        return TestResult(self.name, s.score.statistic, p, 0,
                          {"layers_matched": s.matched, "layers_moved": len(s.score.layers),
                           "layers": len(self.sketch.layers),
                           "null_means": self.null.means, "parent_cosine": s.closeness, "update_ratio": s.ratio,
                           "relation": s.relation, "skipped": list(s.score.skipped)}, s)

    def calibrate(self, models: Any, level: float = 0.01) -> "UpdateTest":
        return UpdateTest(self.sketch, calibrate_updates(self.sketch, dict(named_models(models)))[0], self.share)

    def words(self, r: dict[str, Any]) -> str:
        means = r["null_means"]
        return (f"updates: its change from the base's parent has cosine {r['statistic']:.3f} with the base's own "
                f"over the {r['layers_moved']} layers the base's training moved ({r['layers_matched']} of "
                f"{r['layers']} lined up; siblings {min(means):.3f}-{max(means):.3f}); "
                f"units match the parent's at {r['parent_cosine']:.3f}, moved {r['update_ratio']:.2f}x the base's "
                f"distance from it; 0 queries")

    def describe(self) -> list[str]:
        means, sk = self.null.means, self.sketch
        return [f"  updates    0 queries: the base's update from its parent {sk.parent} (units match it at "
                f"{sk.closeness:.3f}) in {len(sk.layers)} layers ({sum(int(t.shape[1]) for _, _, t, _ in sk.layers)} "
                f"directions); null from {len(means)} siblings ({', '.join(self.null.names)}; "
                f"{min(means):.3f}-{max(means):.3f}); {self.share:g} of the level when the query tests apply too"]

    def inspect(self) -> dict[str, Any]:
        return {"share": self.share, "parent": self.sketch.parent, "parent_cosine": self.sketch.closeness,
                "layers": [k for k, _, _, _ in self.sketch.layers], "null": self.null.to_dict()}

    def audit(self, inputs: Any) -> AuditReport:
        """The sketch re-made from the base and the parent (``inputs.parent``), the suspect's claim re-checked in it,
        and the null re-measured from the siblings it names (twins and calibration models), each when given."""
        sk, checks = self.sketch, []
        if inputs.parent is None:
            checks.append(Check("update sketch", "skip", f"give the parent ({sk.parent}) to re-make it"))
        else:
            again = UpdateSketch.of(inputs.base, inputs.parent, sk.seed, sk.parent)
            same = [a[:2] for a in again.layers] == [b[:2] for b in sk.layers] and all(
                torch.allclose(a[2], b[2], atol=1e-4) and torch.allclose(a[3], b[3], atol=1e-4)
                for a, b in zip(again.layers, sk.layers))
            checks.append(Check("update sketch", "pass" if same else "fail",
                                f"{len(sk.layers)} layers, the same as the base's update from the parent, re-made" if
                                same else "differs from what the given base and parent give: another base or parent, "
                                          "or a tampered or crafted sketch"))
            if inputs.suspect is not None:
                p_kit, p_again = (self.null.predict({b: c for b, _, c, _ in update_score(s, inputs.suspect).score.layers})
                                  for s in (sk, again))
                if p_kit is not None and p_again is not None:
                    ok = (p_kit <= inputs.level) == (p_again <= inputs.level)
                    checks.append(Check("update claim reproduces", "pass" if ok else "fail",
                                        f"update p {p_kit:.3g} in the kit's sketch, {p_again:.3g} in the re-made one",
                                        {"p_kit": p_kit, "p_re_made": p_again}))
        siblings = {**(inputs.twins or {}), **(inputs.calibration or {})}
        checks.append(remeasured(self.null, siblings, lambda got: calibrate_updates(sk, got)[0], "update", "siblings"))
        return AuditReport(checks)

    # the kit file: a header entry under ``updates``, tensors ``updates.<j>.parent`` and ``updates.<j>.update``
    def header(self) -> dict[str, Any]:
        sk = self.sketch
        return {"share": self.share, "seed": sk.seed, "parent": sk.parent, "closeness": sk.closeness,
                "null": self.null.to_dict(), "layers": [{"name": k, "shape": list(s)} for k, s, _, _ in sk.layers]}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{self.kind}.{j}.{part}": t.detach().cpu().float().contiguous()
                for j, (_, _, p, u) in enumerate(self.sketch.layers) for part, t in (("parent", p), ("update", u))}

    @classmethod
    def tensor_names(cls, head: Any) -> set[str]:
        return {f"{cls.kind}.{j}.{part}" for j in range(len(head["layers"])) for part in ("parent", "update")}

    @classmethod
    def from_header(cls, head: Any, tensors: Mapping[str, torch.Tensor], name: str) -> "UpdateTest":
        """The test from a kit's header and tensors: each layer's parent rows and update the shape its header says,
        finite, the parent rows at unit norm and the update orthogonal to them."""
        layers = []
        for j, h in enumerate(head["layers"]):
            p, u = tensors[f"{cls.kind}.{j}.parent"], tensors[f"{cls.kind}.{j}.update"]
            shape = tuple(int(x) for x in h["shape"])
            want = (shape[0], sketch_dims(math.prod(shape[1:]))) if len(shape) in (2, 4) else None
            ok = want is not None and all(t.dtype == torch.float32 and tuple(t.shape) == want and
                                          bool(torch.isfinite(t).all()) for t in (p, u))
            if not ok or not torch.allclose(p.norm(dim=1), torch.ones(shape[0]), atol=1e-3) or \
                    float((p * u).sum(1).abs().max()) > 1e-3:
                raise FingerprintFileError(f"{name}: the update test's sketch of layer {h.get('name')} is malformed "
                                           f"({p.dtype} {tuple(p.shape)}, {u.dtype} {tuple(u.shape)} for a layer of "
                                           f"shape {shape})")
            layers.append((str(h["name"]), shape, p, u))
        try:
            sketch = UpdateSketch(tuple(layers), int(head["seed"]), float(head["closeness"]), str(head["parent"]))
            return cls(sketch, WeightNull.from_dict(head["null"]), float(head["share"]))
        except (CharexError, KeyError, TypeError, ValueError) as e:
            raise FingerprintFileError(f"{name}: the update test's header is malformed: {e}") from e
