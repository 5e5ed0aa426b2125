"""Families of models (``charex lineage``, issue 41): which of a set of open-weight models share an origin, which one
is the common starting point, and which carry another's own training (copies), from their weights alone.

1. **Closeness.** Every pair of models whose layers line up is matched unit by unit (the weight test's statistic,
   :func:`~charex.judge.weights.weight_score`, full weights): the mean matched cosine.
2. **Families.** Models at :data:`~charex.judge.weights.SHARED_ORIGIN` (0.8) or more from one another, linked, form
   a family (independent models of one recipe sit at 0.2-0.35, fine-tunes of one checkpoint at 0.95-0.98).
3. **The root** of a family of three or more: the parent when it is given and in the family, else the member
   closest on average to the others (a checkpoint and its fine-tunes: the checkpoint, each fine-tune being one move
   from it).
4. **Copies.** Every other member's update from the root (:mod:`charex.judge.updates`) is compared with every other
   member's: a copy of X keeps X's update. The pair (X, Y) is judged against X's update cosines with the family's
   other members (siblings of X, under the null that Y is one more of them) by the update test's Student-t
   prediction; a pair is called a copy when p times the number of pairs of its family (Bonferroni) is at most the
   level. With fewer than two other members there is no null and the pair is shown, not judged. The null is
   conservative where the other members hold copies of X too (they widen it), and it assumes that the members are
   alike as siblings: an owner's own twins (siblings from one recipe and one dataset) are the sharper null that
   ``charex weights --parent`` uses.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import CharexError
from .updates import UpdateSketch, update_score
from .weights import SHARED_ORIGIN, prediction_p, weight_score

__all__ = ["Edge", "Family", "Lineage", "lineage"]


@dataclass(frozen=True)
class Edge:
    """A pair of a family's members (not the root): ``cosine`` the update cosine of ``b`` with ``a``'s update from
    the root, ``p`` its p against ``a``'s cosines with the family's other members (None: too few), ``copy`` whether
    it is called a copy (Bonferroni over the family's pairs)."""

    a: str
    b: str
    cosine: float
    p: float | None
    copy: bool


@dataclass(frozen=True)
class Family:
    """A family: its root (how it was chosen), each other member's closeness to the root and update size, its
    pairs."""

    root: str
    chosen: str
    members: dict[str, dict[str, Any]]
    edges: tuple[Edge, ...] = field(default=())


@dataclass(frozen=True)
class Lineage:
    """The families of a set of models, the models in none, those whose weights do not line up with the others'."""

    families: tuple[Family, ...]
    alone: tuple[str, ...]
    closeness: dict[tuple[str, str], float]
    level: float
    links: tuple[Edge, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "alone": list(self.alone), "links": [e.__dict__ for e in self.links],
                "closeness": [{"a": a, "b": b, "cosine": c} for (a, b), c in self.closeness.items()],
                "families": [{"root": f.root, "root_chosen": f.chosen, "members": f.members,
                              "pairs": [e.__dict__ for e in f.edges]} for f in self.families]}

    def lines(self) -> list[str]:
        """The families for people: each root, its members with their closeness, copies beneath what they copy."""
        out = []
        for i, f in enumerate(self.families, 1):
            out.append(f"family {i}: root {f.root} ({f.chosen})")
            for name, m in f.members.items():
                moved = m["update_ratio"]
                kind = ("far from it" if moved is None else "a light edit of it" if moved < 0.25 else
                        f"moved {moved:.2f}x the family's median")
                out.append(f"  {name}: units match the root's at {m['root_cosine']:.3f}, {kind}")
            copies = [e for e in f.edges if e.copy]
            for e in copies:
                out.append(f"    COPY: {e.a} ~ {e.b}: one carries the other's own update (update cosine "
                           f"{e.cosine:.3f}, p {e.p:.2g} before Bonferroni over {len(f.edges)} pairs)")
            if not copies and f.edges:
                closest = max(f.edges, key=lambda e: e.cosine)
                out.append(f"    no copies (closest pair {closest.a} ~ {closest.b}: update cosine {closest.cosine:.3f}"
                           + (f", p {closest.p:.2g})" if closest.p is not None else ", too few members to judge)"))
        for e in self.links:
            out.append(f"LINKED: {e.a} ~ {e.b}: units match at {e.cosine:.3f}, far above the other pairs outside "
                       f"families (p {e.p:.2g} before Bonferroni over {len(self.links_judged)} pairs): one was made "
                       "from the other (pruned, retrained), or both from one start")
        if self.alone:
            out.append(f"in no family: {', '.join(self.alone)}")
        return out

    @property
    def links_judged(self) -> list[tuple[str, str]]:
        """The pairs of models in different families (or none) whose layers line up: each judged for a link."""
        home = {m: i for i, f in enumerate(self.families) for m in (f.root, *f.members)}
        return [(a, b) for a, b in self.closeness if home.get(a, a) != home.get(b, b)]


def lineage(models: Mapping[str, Any], parent: str | None = None, level: float = 0.01) -> Lineage:
    """The families of ``models`` (``name -> model``, two or more; module docs). ``parent``: a name among them taken
    as the root of its family.

    Example:
        >>> lin = lineage({n: load_model(n) for n in ["bundled:base", "bundled:derived-finetuned",
        ...                                             "bundled:independent-1"]})  # doctest: +SKIP
        >>> print("\\n".join(lin.lines()))  # doctest: +SKIP
    """
    names = list(models)
    if len(names) < 2:
        raise CharexError("lineage needs two or more models")
    if parent is not None and parent not in models:
        raise CharexError(f"the parent {parent} is not among the models given")
    close: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(names, 2):
        s = weight_score(models[a], models[b])
        if s.applicable and not math.isnan(s.statistic):
            close[(a, b)] = s.statistic
    group = {n: n for n in names}

    def find(n: str) -> str:
        while group[n] != n:
            n = group[n]
        return n

    for (a, b), c in close.items():
        if c >= SHARED_ORIGIN:
            group[find(a)] = find(b)
    parts: dict[str, list[str]] = {}
    for n in names:
        parts.setdefault(find(n), []).append(n)
    families, alone = [], []
    for members in parts.values():
        if len(members) < 2:
            alone += members
            continue
        families.append(_family(members, models, close, parent, level))
    # pairs across families or with a lone model: linked when far closer than the other such pairs (a pruned and
    # retrained copy sits at 0.67-0.72, under the family line, independent seeds at 0.2-0.35)
    root = {n: find(n) for n in names}
    outside = {k: v for k, v in close.items() if root[k[0]] != root[k[1]]}
    links = []
    for (a, b), v in outside.items():
        null = [w for (x, y), w in outside.items() if not {x, y} & {a, b}]
        p = prediction_p(v, null) if len(null) >= 2 else None
        if p is not None and p * len(outside) <= level:
            links.append(Edge(a, b, v, p, True))
    return Lineage(tuple(families), tuple(alone), close, level, tuple(links))


def _family(members: list[str], models: Mapping[str, Any], close: dict[tuple[str, str], float],
            parent: str | None, level: float) -> Family:
    def c(a: str, b: str) -> float:
        return close.get((a, b), close.get((b, a), 0.0))

    if parent in members:
        root, chosen = parent, "given as the parent"
    else:
        root = max(members, key=lambda m: np.mean([c(m, o) for o in members if o != m]))
        chosen = "the member closest on average to the others"
    rest = [m for m in members if m != root]
    sketches = {}
    for m in rest:
        try:
            sketches[m] = UpdateSketch.of(models[m], models[root], name=root)
        except CharexError:
            continue
    cos = {(a, b): update_score(sketches[a], models[b]).score.statistic for a in sketches for b in sketches if b != a}
    size = {m: math.sqrt(sum(float((u * u).sum()) for _, _, _, u in sk.layers)) for m, sk in sketches.items()}
    med = float(np.median(list(size.values()))) if size else 1.0
    info = {m: {"root_cosine": c(root, m), "update_ratio": size[m] / med if m in size and med > 0 else None}
            for m in rest}
    pairs = list(itertools.combinations(sketches, 2))
    edges = []
    for a, b in pairs:
        others = [cos[(a, z)] for z in sketches if z not in (a, b)]
        u = cos[(a, b)]
        p = prediction_p(u, others) if len(others) >= 2 else None
        edges.append(Edge(a, b, u, p, p is not None and p * len(pairs) <= level))
    return Family(root, chosen, info, tuple(edges))
