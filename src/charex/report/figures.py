"""Figures (matplotlib, Agg backend, PNG): C-example grid, trade-off, DCT saliency, ROC curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._io import atomic_write_with
from ..fingerprint import FingerprintSet
from ..judge.metrics import roc_curve


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    out = atomic_write_with(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _plt().close(fig)
    return out


def examples_grid(sets: Mapping[str, FingerprintSet], path: str | Path, per_method: int = 8) -> Path:
    """Paper Figure 1: a row of C-examples per method, titled with their target class."""
    plt = _plt()
    rows = len(sets)
    fig, axes = plt.subplots(rows, per_method, figsize=(1.3 * per_method, 1.45 * rows + 0.3), squeeze=False)
    for r, (name, fp) in enumerate(sets.items()):
        classes = fp.meta.get("classes") or []
        for c in range(per_method):
            ax = axes[r][c]
            ax.axis("off")
            if c >= fp.n:
                continue
            img = fp.pixels()[c].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(), cmap="gray" if img.shape[2] == 1 else None, interpolation="nearest")
            t = int(fp.targets[c])
            ax.set_title(classes[t] if t < len(classes) else str(t), fontsize=7)
        axes[r][0].text(-0.15, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle("characteristic examples (title: target class)", fontsize=9)
    return _save(fig, path)


def tradeoff(points: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Paper Figure 3: robustness vs transferability, one marker per (method, delta), a panel per group.

    ``points``: dicts with ``label`` (method), ``group`` (e.g. pruning ratio), ``robustness`` and
    ``transferability`` in percent.
    """
    plt = _plt()
    groups = sorted({p["group"] for p in points}, key=str)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), squeeze=False)
    labels = sorted({p["label"] for p in points})
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    for ax, g in zip(axes[0], groups):
        for lab in labels:
            pts = [p for p in points if p["group"] == g and p["label"] == lab]
            if pts:
                ax.scatter([p["transferability"] for p in pts], [p["robustness"] for p in pts], label=lab,
                           color=colors[lab], s=28)
        ax.plot([0, 100], [0, 100], color="gray", lw=0.8, ls="--")
        ax.set(xlim=(-2, 102), ylim=(-2, 102), xlabel="transferability % (independent models)",
               ylabel="robustness % (derived copies)", title=str(g))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("robustness vs transferability (upper left is better)", fontsize=10)
    return _save(fig, path)


def saliency(sal: torch.Tensor, path: str | Path, max_freq: int = 16) -> Path:
    """Paper Figure 2a: mean |d loss / d DCT coefficient| per colour channel (log scale)."""
    plt = _plt()
    c = sal.shape[0]
    fig, axes = plt.subplots(1, c, figsize=(3.2 * c, 3), squeeze=False)
    names = ["R", "G", "B"] if c == 3 else [str(i) for i in range(c)]
    for i in range(c):
        im = axes[0][i].imshow(np.log10(sal[i, :max_freq, :max_freq].numpy() + 1e-12), cmap="viridis")
        axes[0][i].set(title=f"channel {names[i]}", xlabel="j (horizontal freq.)", ylabel="i (vertical freq.)")
        fig.colorbar(im, ax=axes[0][i], fraction=0.046)
    fig.suptitle("log10 saliency of the base model's loss over DCT frequencies", fontsize=10)
    return _save(fig, path)


def roc(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path) -> Path:
    """ROC curves of the match-rate detector: name -> (derived rates, independent rates)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (pos, neg) in curves.items():
        f, t = roc_curve(pos, neg)
        ax.step(f, t, where="post", label=name)
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate (independent models)", ylabel="true positive rate (derived copies)",
           title="verifier ROC")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def heldout_tradeoff(rows: Sequence[dict[str, Any]], path: str | Path, chosen: str | None = None,
                     pool: str = "validation") -> Path:
    """Worst-group robustness of useful derived copies vs mean transferability, one point per method row of
    ``charex reproduce heldout``: with references filled, without open; ``chosen`` (the default) ringed in red.
    Rows without references and the chosen one are labelled (the others crowd the lower left)."""
    from ..lineage import is_student

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ys = []
    for r in rows:
        s = r["summary"]
        useful = [g for name, g in s["groups"].items() if "not useful" not in name and not is_student(name)]
        worst = min(g["robustness"] for g in useful) if useful else float("nan")
        ys.append(worst)
        x = s["transferability"]
        refs = bool(r["spec"].get("references"))
        ax.scatter([x], [worst], s=36, facecolors="tab:blue" if refs else "none", edgecolors="tab:blue")
        if not refs or r["name"] == chosen:
            ax.annotate(r["name"], (x, worst), fontsize=7, xytext=(4, -10), textcoords="offset points",
                        rotation=-30)
        if r["name"] == chosen:
            ax.scatter([x], [worst], s=180, facecolors="none", edgecolors="tab:red", linewidths=1.5)
    lo = min([y for y in ys if y == y] + [95.0])
    ax.axvline(10, color="gray", lw=0.8, ls=":")
    ax.text(10.5, lo - 1, "chance (10 classes)", fontsize=7, color="gray")
    ax.set(xlim=(0, 100), ylim=(lo - 3, 101), xlabel=f"transferability % (mean over the {pool} pool)",
           ylabel="robustness % (worst useful derived group)")
    ax.grid(alpha=0.3)
    ax.set_title("filled: with generation references; open: without; red ring: the default", fontsize=9)
    return _save(fig, path)
