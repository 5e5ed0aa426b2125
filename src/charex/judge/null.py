"""The null distribution of an independent model's match count, fitted on calibration models' counts.

Two models, chosen by the calibration block's ``null`` key:

``logit-normal`` (default since calibration blocks carry ``null``): every independent model has its own match
probability p, with logit(p) ~ Normal(m, s^2) across models, and K | p ~ Binomial(n, p). The verdict uses the
**posterior predictive** of a new independent model's count: the likelihood of the calibration counts over a grid
of (m, s), flat priors on m in [-12, 8] (no pull away from 0 or 1: near-zero counts give a near-zero null) and on s
in [s_min, s_max], integrated over the posterior. Few calibration models leave (m, s) uncertain, so the predictive
is wide; more models sharpen it. Why logit-normal: on the validation pool of the held-out evaluation the spread of
independent models' match rates is about constant on the logit scale (0-0.9 for fingerprints made with references,
1.4-1.8 for the paper's settings), where the beta-binomial's overdispersion ranged from 0 to 0.25 and grew with the
mean. The spread prior [S_MIN, S_MAX] = [0.45, 2.0] brackets what was measured there (median 0.45, largest 1.8):
``scripts/choose_null.py``, docs/method.md.

``beta-binomial`` (calibration blocks without ``null``, written before): K ~ BetaBinomial(n) with mean ``mu`` and
overdispersion ``rho``, fitted by MAP with a Beta(3/2, 3/2) prior on mu and rho >= rho_min. Kept so that files
calibrated earlier give the verdicts they gave.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import CharexError

S_MIN, S_MAX = 0.45, 2.0  # chosen on the validation pool: scripts/choose_null.py
M_RANGE = (-12.0, 8.0)
_GRID = (241, 31, 32)  # logit-mean points, spread points, Gauss-Hermite nodes over the models' logits
RHO_MIN = 0.1


def fit_logit_normal(counts: Sequence[int], n: int, s_min: float = S_MIN, s_max: float = S_MAX) -> dict[str, Any]:
    """The parameters of a ``logit-normal`` null block for calibration ``counts`` out of ``n`` each."""
    k = [int(c) for c in counts]
    if len(k) < 2:
        raise CharexError(f"calibration needs at least 2 reference models, got {len(k)}")
    if not 0 < s_min < s_max <= 10:
        raise CharexError(f"the spread prior needs 0 < s_min < s_max <= 10, got [{s_min}, {s_max}]")
    block = {"null": "logit-normal", "counts": k, "counts_n": int(n), "s_min": float(s_min), "s_max": float(s_max)}
    block["mu"] = float(np.dot(np.arange(n + 1), _predictive(block, n)) / n)
    return block


def null_sf(block: Mapping[str, Any], m: int) -> np.ndarray:
    """P(K_m >= k) for k = 0..m+1: the null tail of a new independent model's matches among m examples."""
    if block.get("null") == "logit-normal":
        pmf = _predictive(block, m)
    else:
        from scipy.stats import betabinom

        s = 1 / block["rho"] - 1
        pmf = betabinom.pmf(np.arange(m + 1), m, block["mu"] * s, (1 - block["mu"]) * s)
    return np.append(np.cumsum(pmf[::-1])[::-1], 0.0).clip(0.0, 1.0)


def p_value(block: Mapping[str, Any], k: int, m: int) -> float:
    """P(K_m >= k) under the calibrated null."""
    return float(null_sf(block, m)[min(max(int(k), 0), m + 1)])


def threshold(block: Mapping[str, Any], m: int, level: float) -> int:
    """Smallest match count k out of m with P(K_m >= k) <= level (m + 1 when none is)."""
    ok = np.nonzero(null_sf(block, m) <= level)[0]
    return int(ok[0]) if len(ok) else m + 1


def _predictive(block: Mapping[str, Any], m: int) -> np.ndarray:
    """Posterior predictive pmf of a new model's count among m examples (logit-normal null)."""
    n = int(block["counts_n"])
    lik = _grid_pmf(n, block["s_min"], block["s_max"])
    ll = np.log(lik[np.asarray(block["counts"])] + 1e-300).sum(0)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    return np.einsum("kij,ij->k", _grid_pmf(m, block["s_min"], block["s_max"]), w)


@lru_cache(maxsize=16)
def _grid_pmf(n: int, s_min: float, s_max: float) -> np.ndarray:
    """P(K = k | m, s) for k = 0..n on the (m, s) grid: (n + 1) x len(m) x len(s)."""
    from scipy.special import expit
    from scipy.stats import binom

    gm, gs, nodes = _GRID
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    mm, ss = np.meshgrid(np.linspace(*M_RANGE, gm), np.linspace(s_min, s_max, gs), indexing="ij")
    ks = np.arange(n + 1)[:, None, None]
    out = np.zeros((n + 1, gm, gs))
    for zj, wj in zip(z, wz / wz.sum()):  # one node at a time: memory (n + 1) x grid, not times the nodes
        out += wj * binom.pmf(ks, n, expit(mm + ss * zj)[None])
    return out


def fit_beta_binomial(counts: Sequence[int], n: int, rho_min: float = RHO_MIN) -> tuple[float, float]:
    """MAP fit of (mu, rho) of a beta-binomial to ``counts`` out of ``n`` each (the earlier null; module docs)."""
    from scipy.optimize import minimize
    from scipy.stats import betabinom

    k = np.asarray(counts, dtype=float)
    if k.size < 2:
        raise CharexError(f"calibration needs at least 2 reference models, got {k.size}")

    def unpack(z: np.ndarray) -> tuple[float, float]:
        mu = 1 / (1 + math.exp(-z[0]))
        rho = rho_min + (1 - rho_min) / (1 + math.exp(-z[1]))
        return min(max(mu, 1e-9), 1 - 1e-9), min(rho, 1 - 1e-9)

    def nll(z: np.ndarray) -> float:
        mu, rho = unpack(z)
        s = 1 / rho - 1
        ll = betabinom.logpmf(k, n, mu * s, (1 - mu) * s).sum() + 0.5 * math.log(mu) + 0.5 * math.log(1 - mu)
        return -float(ll)

    m0 = (k.mean() + 0.5) / (n + 1)
    best = min((minimize(nll, np.array([math.log(m0 / (1 - m0)), z1]), method="Nelder-Mead",
                         options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000}) for z1 in (-4.0, -1.0, 1.0)),
               key=lambda r: r.fun)
    return unpack(best.x)
