"""The weight test (issue 31): for a suspect whose parameters can be read, are they the base's, unit by
unit, whatever a thief did that costs nothing (permute hidden units, rescale them across a ReLU, fold or drop BatchNorm,
prune, quantize, fine-tune, replace the head, rename the state dict, store float16)? No query is sent.

For each weight layer in order (convolutions and linear layers, the classifier head left out), the suspect's input
channels are put in the base's order by the matching found at the latest layer of that width (:func:`_source`: the
layer before in a chain, the stream's last writer in a residual network), each input channel's block of weights
is scaled to unit norm (so that a positive rescaling of a unit, or a folded BatchNorm scale, changes nothing), and
every output unit's row is compared with every base row by cosine; the assignment that maximises the total
(Hungarian, ``scipy.optimize.linear_sum_assignment``) matches the units and gives that layer's statistic, the mean
matched cosine. A copy keeps it near 1 (fine-tuned, int8) or well above independent models (pruned 90% and retrained:
0.72 against 0.21 for three other seeds of the base's recipe); the statistic is the mean over the layers matched.

Why calibrated, not exact: independently trained networks learn partly the same units (first-layer filters match at
cosine 0.55-0.69 between seeds of the bundled CNN), so no permutation argument gives the null; it is fitted on
independent models of the same architecture (calibration models or twins), and the p-value is the Student-t
prediction p of a new independent model's statistic, (T - mean) / (sd sqrt(1 + 1/k)) with k - 1 degrees of freedom
(valid when independent models' statistics are normal around their mean; k >= 2). Layers that do not line up (other
widths or kernel shapes, after the first mismatch) are skipped and named; a suspect whose first layer does not line up
is "not applicable", never "not derived". In a kit the base is its :class:`WeightSketch` (seeded projections of the
unit rows) and the matching runs in the sketch's directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment

from torch import nn

from ..errors import CharexError, FingerprintFileError
from ..models.probe import Models, named_models
from .audit import AuditReport, Check
from .protocol import Form, TestResult

MAX_PAIRS = 64_000_000  # units of the base times units of the suspect in one layer (VGG-16's largest: 16.8M)

__all__ = ["WeightNull", "WeightScore", "WeightSketch", "WeightTest", "audit_weights", "calibrate_weights",
           "layer_weights", "prediction_p", "weight_score"]


def layer_weights(state: Mapping[str, torch.Tensor] | torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight layers of a model in order: (name, weight) for every 2-D (linear) or 4-D (convolution) parameter
    of a module (a TorchScript or torch.export program's included; buffers such as a baked-in input normalisation are
    not units), or tensor of a state dict, whatever its name (a renamed state dict lines up alike), as float32 (any
    storage dtype); for an ONNX model, its Conv, Gemm and MatMul weights in node order
    (:func:`charex.models.onnx.onnx_weights`)."""
    inner = getattr(state, "model", state)
    if hasattr(inner, "session") and hasattr(inner, "path"):  # an ONNX suspect: its initializers, in node order
        from ..models.onnx import onnx_weights

        return onnx_weights(inner.path)
    if isinstance(state, torch.nn.Module):  # its parameters: buffers (input normalisation, BatchNorm) are not units
        state = dict(inner.named_parameters()) if isinstance(inner, torch.nn.Module) else inner.state_dict()
    return [(k, v.detach().float().cpu()) for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() in (2, 4)]


def _rows(w: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Unit rows of a layer with its input channels in ``order`` (None: as they are; else of a length that divides
    them, :func:`_source`), each input channel's block at unit norm, each row at unit norm."""
    if order is not None:
        per = w.shape[1] // len(order)  # a linear layer after a flatten: channel-major blocks
        w = w.reshape(w.shape[0], len(order), per, *w.shape[2:])[:, order].reshape(w.shape)
    blocks = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1).clamp_min(1e-12)
    w = w / blocks.view(1, -1, *([1] * (w.dim() - 2)))
    r = w.reshape(w.shape[0], -1)
    return r / r.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class WeightScore:
    """The suspect's matched cosine per layer lined up with the base's, and what could not be lined up.

    Attributes:
        layers: (base layer name, suspect layer name, mean matched cosine, units matched) per layer compared.
        skipped: base layers left out, each with the reason.
    """

    layers: tuple[tuple[str, str, float, int], ...]
    skipped: tuple[str, ...] = field(default=())

    @property
    def statistic(self) -> float:
        """The mean matched cosine over the layers compared (nan when none was)."""
        return float(np.mean([c for _, _, c, _ in self.layers])) if self.layers else float("nan")

    @property
    def applicable(self) -> bool:
        """Whether half or more of the base's layers (two at least) lined up: else the suspect is of another
        architecture and the test says "not applicable"."""
        return len(self.layers) >= max(2, (len(self.layers) + len(self.skipped) + 1) // 2)

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "applicable": self.applicable, "skipped": list(self.skipped),
                "layers": [{"base": b, "suspect": s, "cosine": c, "units": u} for b, s, c, u in self.layers]}


@dataclass(frozen=True)
class WeightSketch:
    """What a kit keeps of the base's weights for the weight test: per layer lined up (the head left out), its name,
    its weight's shape and its units' rows (:func:`_rows`: input blocks and rows at unit norm) projected on ``m``
    seeded Gaussian directions, ``m`` = min(:data:`SKETCH_DIMS`, half the unit's inputs). A suspect's rows are
    projected on the same directions (after its inputs are put in the base's order), so the chain of matchings runs
    in the sketch space; a layer keeps at most half of each unit's directions and none of its scale, so the kit
    cannot be turned back into the base (docs/threat-model.md).

    Attributes:
        layers: (base layer name, weight shape, sketch: units x m float32) per layer.
        seed: the directions' seed (layer i's directions: :func:`directions` (seed, i)).
    """

    layers: tuple[tuple[str, tuple[int, ...], torch.Tensor], ...]
    seed: int = 0

    @classmethod
    def of(cls, base: Any, seed: int = 0) -> "WeightSketch":
        """The sketch of a model (or state dict); an error when it has fewer than three weight layers."""
        lb = _checked(layer_weights(base), "the base")
        if len(lb) < 3:
            raise CharexError(f"the weight test needs three or more weight layers; the base has {len(lb)}")
        return cls(tuple((k, tuple(w.shape), _project(_rows(w, None), i, seed))  # type: ignore[arg-type]
                         for i, (k, w) in enumerate(lb[:-1])), seed)

    @property
    def dims(self) -> list[int]:
        """Directions kept per layer."""
        return [int(t.shape[1]) for _, _, t in self.layers]


SKETCH_DIMS = 64


def sketch_dims(d: int) -> int:
    """Directions kept for a unit of ``d`` inputs: min(SKETCH_DIMS, d // 2), at least 1."""
    return max(1, min(SKETCH_DIMS, d // 2))


def directions(d: int, index: int, seed: int) -> torch.Tensor:
    """Layer ``index``'s d x :func:`sketch_dims` (d) Gaussian directions, from ``seed``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return torch.randn(d, sketch_dims(d), generator=g)


def _project(rows: torch.Tensor, index: int, seed: int) -> torch.Tensor:
    p = rows @ directions(rows.shape[1], index, seed)
    return p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _checked(layers: list[tuple[str, torch.Tensor]], who: str) -> list[tuple[str, torch.Tensor]]:
    bad = next((k for k, w in layers if not torch.isfinite(w).all()), None)
    if bad is not None:
        raise CharexError(f"{who} holds NaN or inf weights ({bad}): not a model the weight test can judge")
    return layers


def weight_score(base: Any, suspect: Any) -> WeightScore:
    """Line the suspect's weight layers up with the base's and match their units (module docs).

    Args:
        base: a model (``nn.Module``, a charex ``Normalized`` included) or state dict, or its
            :class:`WeightSketch` (a kit's: the matching then runs in the sketch's directions).
        suspect: a model or state dict.

    Example:
        >>> s = weight_score(load_model("bundled:base"), load_model("bundled:derived-pruned90"))  # doctest: +SKIP
        >>> round(s.statistic, 2)  # doctest: +SKIP
        0.72
    """
    ls = _checked(layer_weights(suspect), "the suspect")
    if not ls:
        raise CharexError("the suspect holds no weight tensors (an empty model or state dict): nothing to compare")
    if isinstance(base, WeightSketch):
        lb: list[tuple[str, tuple[int, ...], torch.Tensor]] = list(base.layers)
        seed: int | None = base.seed
    else:
        full = _checked(layer_weights(base), "the base")
        if len(full) < 3:
            return WeightScore((), (f"fewer than three weight layers (base {len(full)}, suspect {len(ls)})",))
        lb, seed = [(k, tuple(w.shape), _rows(w, None)) for k, w in full[:-1]], None  # type: ignore[misc]
    if len(ls) < 3:
        return WeightScore((), (f"fewer than three weight layers (suspect {len(ls)})",))
    matched, skipped = match_units(lb, ls[:-1], seed)  # the classifier head: replaced by any reuse for another task
    return WeightScore(tuple((m.base, m.suspect, m.cosine, len(m.units)) for m in matched), tuple(skipped))


@dataclass(frozen=True)
class Matched:
    """One layer of the suspect lined up with the base's: ``units`` [i] = (base unit, suspect unit) matched,
    ``rows`` the suspect's unit rows with its inputs in the base's order (projected in the sketch's directions when
    matched against a sketch), ``sims`` each matched pair's cosine."""

    base: str
    suspect: str
    units: np.ndarray
    rows: torch.Tensor
    sims: np.ndarray

    @property
    def cosine(self) -> float:
        """The layer's statistic: the mean matched cosine."""
        return float(self.sims.mean())


def match_units(lb: Sequence[tuple[str, tuple[int, ...], torch.Tensor]], ls: Sequence[tuple[str, torch.Tensor]],
                seed: int | None) -> tuple[list[Matched], list[str]]:
    """The chain of matchings (module docs): the base's layers ``lb`` (name, weight shape, unit rows: :func:`_rows`,
    projected by :func:`_project` when ``seed`` is given) against the suspect's weights ``ls`` in order, each layer's
    inputs put in the order the matching of the layer it reads found. Returns the layers matched and, for those that
    could not be, why."""
    out: list[Matched] = []
    skipped: list[str] = []
    seen: list[torch.Tensor] = []  # each matched layer's order (base unit -> suspect unit)
    for i, (kb, shape, rb) in enumerate(lb):
        if i >= len(ls):
            skipped += [f"{k}: the suspect has no layer left" for k, _, _ in lb[i:]]
            break
        ks, ws = ls[i]
        if len(shape) != ws.dim() or shape[2:] != tuple(ws.shape[2:]) or shape[1] != ws.shape[1]:
            skipped += [f"{k}: does not line up with the suspect's {ks} {tuple(ws.shape)} (base {s})"
                        for k, s, _ in lb[i:]]
            break
        if shape[0] * ws.shape[0] > MAX_PAIRS:  # the similarity matrix alone would not fit
            skipped += [f"{k}: {s[0]} x {ws.shape[0]} units, too many to match" for k, s, _ in lb[i:]]
            break
        rs = _rows(ws, _source(seen, shape[1]) if i else None)
        if seed is not None:
            rs = _project(rs, i, seed)
        sim = (rb @ rs.T).numpy()
        r, c = linear_sum_assignment(-sim)
        out.append(Matched(kb, ks, np.stack([r, c], 1), rs, sim[r, c]))
        if len(r) < shape[0] or ws.shape[0] != shape[0]:  # other widths: the chain cannot go on
            skipped += [f"{k}: after a layer of another width" for k, _, _ in lb[i + 1:]]
            break
        order = torch.empty(shape[0], dtype=torch.long)
        order[torch.as_tensor(r)] = torch.as_tensor(c)  # base unit r is the suspect's unit c
        seen.append(order)
    return out, skipped


def _source(seen: list[torch.Tensor], inputs: int) -> torch.Tensor | None:
    """The order of the layer whose outputs a layer of ``inputs`` input channels reads: the latest matched layer with
    that many units, else the latest whose units divide them (a linear layer after a flatten). In a chain that is the
    layer before; in a residual network, the latest layer that wrote into the stream it reads (under a consistent
    permutation every layer adding into one stream shares its order); in attention, the value projection for the
    output projection (of a fused query-key-value projection of 3 x ``inputs`` units, its last third, when its matching
    kept the values among the values). None: no layer before has a matching width (the inputs are taken as they
    are)."""
    for o in reversed(seen):
        if len(o) == inputs:
            return o
        if len(o) == 3 * inputs:
            v = o[2 * inputs:] - 2 * inputs
            if bool(((v >= 0) & (v < inputs)).all()):
                return v
    return next((o for o in reversed(seen) if inputs % len(o) == 0), None)


@dataclass(frozen=True)
class WeightNull:
    """Each base layer's matched cosine for independent models of the base's architecture, and the p-value of a new
    one: its statistic is compared with theirs over the same layers (the layers a suspect lined up with)."""

    layers: tuple[tuple[str, tuple[float, ...]], ...]  # base layer -> each calibration model's matched cosine
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        k = {len(v) for _, v in self.layers}
        if not self.layers or len(k) != 1 or k.pop() < 2 or \
                not all(math.isfinite(x) for _, v in self.layers for x in v):
            raise CharexError("a weight null needs each layer's statistic for the same two or more independent models "
                              "of the base's architecture")

    @property
    def means(self) -> list[float]:
        """Each calibration model's mean matched cosine over every layer."""
        return [float(np.mean([v[i] for _, v in self.layers])) for i in range(len(self.layers[0][1]))]

    def p_value(self, score: WeightScore) -> float | None:
        """P(a new independent model's mean matched cosine over the suspect's layers >= the suspect's): the Student-t
        prediction p, (T - mean) / (sd sqrt(1 + 1/k)) with k - 1 dof; None when not applicable."""
        if not score.applicable:
            return None
        return self.predict({b: c for b, _, c, _ in score.layers}, least=2)

    def predict(self, values: Mapping[str, float], least: int = 1) -> float | None:
        """The Student-t prediction p of a suspect's per-layer statistics ``values`` (layer -> value): its mean over
        the layers the null knows against each calibration model's mean over the same layers; None with fewer
        than ``least`` such layers."""
        known = dict(self.layers)
        used = [(c, known[b]) for b, c in values.items() if b in known]
        if len(used) < least:
            return None
        t = float(np.mean([c for c, _ in used]))
        return prediction_p(t, np.mean([v for _, v in used], axis=0))  # each model's mean over the same layers

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WeightNull":
        """The null written by :meth:`to_dict` (a kit's header); an error naming what is malformed."""
        try:
            return cls(tuple((str(r["layer"]), tuple(float(x) for x in r["cosines"])) for r in d["layers"]),
                       tuple(str(n) for n in d.get("names", ())))
        except (KeyError, TypeError, ValueError) as e:
            raise CharexError(f"the weight test's null is malformed: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"null": "weights", "names": list(self.names),
                "layers": [{"layer": b, "cosines": list(v)} for b, v in self.layers],
                "method": "mean matched cosine of the units over the layers lined up; Student-t prediction from "
                          "independent models of the base's architecture over the same layers"}


def prediction_p(t: float, null: Sequence[float]) -> float:
    """The Student-t prediction p of a new draw at least ``t`` from the distribution the ``null`` values were drawn
    from: (t - mean) / (sd sqrt(1 + 1/k)) with k - 1 dof, sd at least 0.001 (three seeds can agree to 1e-4)."""
    k = len(null)
    sd = max(float(np.std(null, ddof=1)), 1e-3)
    return float(stats.t.sf((t - float(np.mean(null))) / (sd * math.sqrt(1 + 1 / k)), df=k - 1))


def calibrate_weights(base: Any, independents: Mapping[str, Any] | Sequence[Any]) -> WeightNull:
    """The weight null from independent models (``name -> model``) whose layers all line up with the base's (two
    or more are needed; others are left out)."""
    items = independents.items() if isinstance(independents, Mapping) else enumerate(independents)
    kept = [(str(n), weight_score(base, m)) for n, m in items]
    kept = [(n, s) for n, s in kept if s.layers and not s.skipped]
    if len(kept) < 2:
        raise CharexError(f"the weight test needs two or more independent models of the base's architecture; "
                          f"{len(kept)} line up with it")
    layers = tuple((b, tuple(dict((x[0], x[2]) for x in s.layers)[b] for _, s in kept))
                   for b, _, _, _ in kept[0][1].layers)
    return WeightNull(layers, tuple(n for n, _ in kept))


WEIGHT_SHARE = 0.1  # the weight test's share of the level when the query tests apply too (docs/method.md)
# a model whose units match the base's at a mean cosine this high shares the base's origin (a copy, the parent the
# base was fine-tuned from, or a sibling fine-tuned from the same parent): independent seeds of the bundled recipe
# sit at 0.21-0.35, a 90%-pruned and retrained copy at 0.67-0.72, siblings of a fine-tuned base at 0.957-0.972
# (issue 41), fine-tuned copies at 0.999
SHARED_ORIGIN = 0.8


def refuse_shared_origin(null: WeightNull, role: str = "calibration model") -> None:
    """An error naming every model of a weight null that shares the base's origin (:data:`SHARED_ORIGIN`): such a
    null makes the weight test powerless against copies, and a kit whose models descend from the base's parent
    judges that parent and its other fine-tunes by their closeness to the parent, not to what the base's training
    added (issue 41)."""
    close = [(n, m) for n, m in zip(null.names, null.means) if m >= SHARED_ORIGIN]
    if close:
        who = ", ".join(f"{n} (mean matched cosine {m:.3f})" for n, m in close)
        raise CharexError(f"{who}: its units match the base's far more closely than independent models' do (0.2-0.35): "
                          f"it shares the base's origin (a copy of it, its parent, or another fine-tune of its "
                          f"parent), so it cannot serve as a {role}. If your model was fine-tuned from a public "
                          "checkpoint, give that checkpoint as --parent: the kit then asks what your fine-tuning "
                          "added, and such models (siblings) are what it is calibrated on. Otherwise give models "
                          "trained from other starting points")
NO_WEIGHTS = "not applicable: no weights to read (answers or an endpoint)"


class ReadingTest:
    """What the tests that read a suspect's parameters (0 queries) share: the kit's interface for a test with no query
    set (its kit header holds it), applying to a suspect whose parameters can be read, its cell the statistic."""

    __test__ = False
    n = 0
    natural = False
    calibrated = True
    how_to_calibrate = ""
    name = ""

    def __init__(self, sketch: Any, null: "WeightNull", share: float = WEIGHT_SHARE) -> None:
        if not 0 < share <= 1:
            raise CharexError(f"the {self.name} test's share of the level must lie in (0, 1], got {share!r}")
        self.sketch, self.null, self.share = sketch, null, float(share)

    @classmethod
    def holds(cls, fp: Any) -> bool:
        return False  # no query set: the kit's header holds it

    def applies(self, form: Form) -> str | None:
        return NO_WEIGHTS if form.model is None else None

    @staticmethod
    def unreadable(model: Any) -> str | None:
        """Why a model's weights cannot be read (no weight layers; a program without a state dict), or None; NaN
        weights and the like are an error, never "not applicable"."""
        try:
            if not layer_weights(model):
                return "not applicable: no weight layers charex can read in this model"
        except CharexError:
            raise
        except Exception as e:  # a program (TorchScript, torch.export) without a state dict, ...
            return f"not applicable: its weights cannot be read ({type(e).__name__})"
        return None

    @classmethod
    def cell(cls, r: dict[str, Any] | None) -> str:
        """The statistic, or why there is none."""
        if r is None:
            return "-"
        return "not applicable" if not r.get("applies", True) else format(r["statistic"], ".3f")

    def summary(self) -> dict[str, Any]:
        return {"test": self.name, "queries": 0}


class WeightTest(ReadingTest):
    """The weight test behind the kit's interface: it sends no query; it reads a local suspect's parameters and
    matches them, unit by unit, with the kit's sketch of the base's (:class:`WeightSketch`; or the base itself, for
    ``charex weights``), p from the null stored beside it (independent models of the base's architecture, scored
    against the same sketch when the kit was made). It applies to a suspect whose parameters can be read and whose
    layers line up with the base's (another architecture: "not applicable", never "not derived"); it takes
    :data:`WEIGHT_SHARE` of the level when a query test applies too.
    """

    kind = name = "weights"
    column = "weights: cosine"

    @classmethod
    def make(cls, base: nn.Module, independents: Models, seed: int = 0) -> "WeightTest":
        """The kit's weight test: the base's sketch and its null from the given independent models whose layers all
        line up with the base's (none takes part in the sketch, which is a function of the base alone)."""
        sketch = WeightSketch.of(base, seed)
        return cls(sketch, calibrate_weights(sketch, independents))

    def read(self, model: Any) -> TestResult | str:
        """The test's finding on the suspect's parameters: the mean matched cosine and its calibrated p; or why it
        does not apply (no weight layers charex can read, or layers that do not line up with the base's)."""
        why = self.unreadable(model)
        if why:
            return why
        score = weight_score(self.sketch, model)
        p = self.null.p_value(score)
        if not score.applicable or p is None:
            return (f"not applicable: {len(score.layers)} of the base's {len(self.null.layers)} layers line up "
                    "(another architecture)")
        return TestResult(self.name, score.statistic, p, 0,
                          {"layers_matched": len(score.layers), "layers": len(self.null.layers),
                           "null_means": self.null.means, "skipped": score.to_dict()["skipped"]}, score)

    def calibrate(self, models: Any, level: float = 0.01) -> "WeightTest":
        return WeightTest(self.sketch, calibrate_weights(self.sketch, dict(named_models(models))), self.share)

    def words(self, r: dict[str, Any]) -> str:
        means = r["null_means"]
        return (f"weights: units match the base's at cosine {r['statistic']:.3f} over {r['layers_matched']} of "
                f"{r['layers']} layers (independent models of its architecture {min(means):.3f}-{max(means):.3f}); "
                "0 queries")

    def describe(self) -> list[str]:
        means, sk = self.null.means, self.sketch
        return [f"  weights    0 queries: a sketch of {len(sk.layers)} layers of the base's units ({sum(sk.dims)} "
                f"directions, not invertible into the base); null from {len(means)} models of its architecture "
                f"({', '.join(self.null.names)}; mean matched cosine {min(means):.3f}-{max(means):.3f}); "
                f"{self.share:g} of the level when the query tests apply too"]

    def inspect(self) -> dict[str, Any]:
        """What ``charex inspect --json`` shows of it."""
        return {"share": self.share, "layers": [k for k, _, _ in self.sketch.layers], "directions": self.sketch.dims,
                "null": self.null.to_dict()}

    def audit(self, inputs: Any) -> AuditReport:
        """The sketch re-made from the base, the null re-measured, the claim re-checked (:func:`audit_weights`)."""
        models = {**(inputs.twins or {}), **(inputs.references or {}), **(inputs.calibration or {})}
        return audit_weights(self, inputs.base, models, suspect=inputs.suspect, level=inputs.level)

    # the kit file: a header entry under ``weights`` and one tensor per layer, ``weights.<j>``
    def header(self) -> dict[str, Any]:
        sk = self.sketch
        if not isinstance(sk, WeightSketch):
            raise FingerprintFileError("a weight test on the base's full weights is not written to a kit (its sketch "
                                       "is: WeightTest.make)")
        return {"share": self.share, "seed": sk.seed, "null": self.null.to_dict(),
                "layers": [{"name": k, "shape": list(shape)} for k, shape, _ in sk.layers]}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{self.kind}.{j}": t.detach().cpu().float().contiguous() for j, (_, _, t) in
                enumerate(self.sketch.layers)}

    @classmethod
    def tensor_names(cls, head: Any) -> set[str]:
        return {f"{cls.kind}.{j}" for j in range(len(head["layers"]))}

    @classmethod
    def from_header(cls, head: Any, tensors: Mapping[str, torch.Tensor], name: str) -> "WeightTest":
        """The weight test from a kit's header and tensors: every layer's sketch the shape its header says (units x
        directions), finite, at unit norm; its null and share as written."""
        layers = []
        for j, h in enumerate(head["layers"]):
            t, shape = tensors[f"{cls.kind}.{j}"], tuple(int(x) for x in h["shape"])
            want = (shape[0], sketch_dims(math.prod(shape[1:]))) if len(shape) in (2, 4) else None
            if want is None or t.dtype != torch.float32 or tuple(t.shape) != want or not torch.isfinite(t).all() or \
                    not torch.allclose(t.norm(dim=1), torch.ones(shape[0]), atol=1e-3):
                raise FingerprintFileError(f"{name}: the weight test's sketch of layer {h.get('name')} is malformed "
                                           f"({t.dtype} {tuple(t.shape)} for a layer of shape {shape})")
            layers.append((str(h["name"]), shape, t))
        try:
            return cls(WeightSketch(tuple(layers), int(head["seed"])), WeightNull.from_dict(head["null"]),
                       float(head["share"]))
        except CharexError as e:
            raise FingerprintFileError(f"{name}: {e}") from e


def audit_weights(test: Any, base: nn.Module, models: Models | None = None, *, suspect: Any = None,
                  level: float = 0.01) -> AuditReport:
    """Check a kit's weight test: its sketch is the one ``base`` gives (:class:`~charex.judge.weights.WeightSketch`,
    deterministic from the base and the recorded seed), and, given the models its null names (``name -> model``:
    the calibration models, references and twins that lined up), their per-layer statistics re-measured; given a
    ``suspect``, its weight p in the kit's sketch and in the re-made one, the same decision at ``level``."""
    sk = test.sketch
    again = WeightSketch.of(base, sk.seed)
    same = [a[:2] for a in again.layers] == [b[:2] for b in sk.layers] and all(
        torch.allclose(a[2], b[2], atol=1e-4) for a, b in zip(again.layers, sk.layers))
    checks = [Check("weight sketch", "pass" if same else "fail",
                    f"{len(sk.layers)} layers, the same as the base's re-made sketch" if same else
                    "differs from the sketch the given base gives: another base, or a tampered or crafted sketch")]
    if suspect is not None:
        p_kit, p_again = (test.null.p_value(weight_score(s, suspect)) for s in (sk, again))
        if p_kit is None or p_again is None:
            checks.append(Check("weight claim reproduces", "skip", "the weight test does not apply to the suspect"))
        else:
            ok = (p_kit <= level) == (p_again <= level)
            checks.append(Check("weight claim reproduces", "pass" if ok else "fail",
                                f"weight p {p_kit:.3g} in the kit's sketch, {p_again:.3g} in the re-made one",
                                {"p_kit": p_kit, "p_re_made": p_again}))
    checks.append(remeasured(test.null, models, lambda got: calibrate_weights(sk, got), "weight", "models"))
    return AuditReport(checks)


def remeasured(null: WeightNull, models: Models | None, calibrate: Any, test: str, who: str) -> Check:
    """The audit check that re-measures a null of per-layer statistics from the models it names (``name -> model``;
    ``bundled:NAME`` or a file path names the model NAME it was made with) by ``calibrate(name -> model)``: pass when
    the same models give the recorded values to 1e-4; skip, naming them, when some are not given."""
    given: dict[str, Any] = {}
    for spec, m in named_models(models or {}):
        for key in (spec, spec.removeprefix("bundled:"), spec.rsplit("/", 1)[-1].removesuffix(".safetensors")):
            given.setdefault(key, m)
    missing = [n for n in null.names if n not in given]
    if missing:
        return Check(f"{test} null re-measured", "skip", f"give the {who} it names to re-measure them: "
                                                         f"{', '.join(missing)}")
    again = calibrate({n: given[n] for n in null.names})
    diff = max(abs(a - b) for (_, x), (_, y) in zip(again.layers, null.layers) for a, b in zip(x, y))
    ok = again.names == null.names and diff <= 1e-4
    return Check(f"{test} null re-measured", "pass" if ok else "fail",
                 f"{len(null.names)} {who}, largest difference {diff:.2g}", {"max_difference": diff})
