"""Small frozen value objects: the generation config and the verification verdict."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import CharexError

Method = Literal["vanilla", "rc", "rcgm", "ltrc"]
METHODS: tuple[str, ...] = ("vanilla", "rc", "rcgm", "ltrc")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
NOISE_SCOPES: tuple[str, ...] = ("all", "weights")


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate characteristic examples (the paper's Section 2).

    Attributes:
        method: ``vanilla`` (plain targeted PGD from noise), ``rc`` (one weight-noise sample
            per step), ``rcgm`` (input gradient averaged over ``q`` weight-noise samples per
            step) or ``ltrc`` (rc/rcgm plus a DCT high-pass projection of band ``k`` after
            every step; ``q`` = 1 is LTRC without gradient mean).
        n: number of examples.
        steps: PGD steps T (default 100; paper: 500).
        alpha: sign-gradient step size in [0, 1] pixel units (default 0.5/255; the paper does not state it).
        delta: half-width of the uniform weight noise U[-delta, delta] (absolute).
        q: weight-noise samples averaged per step (rcgm/ltrc; rc uses 1, vanilla 0).
        k: high-pass band: DCT coefficients with 1 <= i + j <= k are zeroed (ltrc only).
        eta: an example is eta-optimal when its base-model loss is below eta.
        seed: seed of the start noise, the targets and the weight noise.
        dtype: compute dtype of the forward/backward passes: ``bfloat16`` (autocast; channels-last
            on CPU), ``float32``, or ``auto`` (default): bfloat16 where the device supports it natively
            (CUDA with bf16, or a CPU with AVX-512-BF16/AMX), else float32. On trained CNN-1 models
            bf16 leaves base match, robustness and transferability unchanged within the spread between
            seeds at half the time (docs/performance.md). The resolved dtype is recorded.
        noise_scope: ``all`` learnable parameters (default) or only conv/linear ``weights``.
        early_stop: freeze examples once their base-model loss is below eta.
        polish_steps: at most this many extra 1/255 sign steps on the 8-bit grid for examples
            that quantization pushed off their target.
        ref_weight: weight lambda of the reference-contrastive term when ``generate`` is given
            reference models: each step descends CE(base) + lambda * mean_r -log(1 - p_r(target | x))
            (default 8; ignored without references).
        surrogate_weight: weight mu of the surrogate term when ``generate`` is given surrogate models (the
            owner's own students of the base, which the examples should transfer to): each step also descends
            mu * mean_s CE(s(x), target) (default 4; ignored without surrogates).
        eot: expectation over transformations: comma-separated channels (``charex.make.channels`` grammar, e.g.
            ``jpeg:75`` or ``jpeg:75,shift:1``) through which the base-model loss is also taken at every step,
            the gradients averaged with the clean one, so that the examples survive what an image API does to
            them (JPEG through a differentiable approximation). Empty (default): clean images only.

    Defaults (chosen on the validation pool of ``charex reproduce heldout --pool validation``; the held-out
    numbers are in docs/research-record.md): vanilla steps, 100 of them at 0.5/255, and ``ref_weight`` 8 for the
    reference-contrastive term, to be used with generation references (``generate(..., references=...)``).
    With references the methods' weight noise and high-pass changed nothing measurable, so the default is
    the cheapest. ``PRESETS["paper"]`` is the paper's LTRC setting, with the step size (which the paper does not
    state) of the paper profile: 0.25/255, chosen on a validation pool by a rule written before its run.

    Example:
        >>> GenerationConfig(method="ltrc", delta=0.03, k=2, q=10).method
        'ltrc'
    """

    method: str = "vanilla"
    n: int = 100
    steps: int = 100
    alpha: float = 0.5 / 255.0
    delta: float = 0.0
    q: int = 1
    k: int = 0
    eta: float = 1e-6
    seed: int = 0
    dtype: str = "auto"
    noise_scope: str = "all"
    early_stop: bool = False
    polish_steps: int = 100
    ref_weight: float = 8.0
    surrogate_weight: float = 4.0
    eot: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CharexError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check_int("n", self.n, 1)
        _check_int("steps", self.steps, 0)
        _check_int("q", self.q, 1)
        _check_int("k", self.k, 0)
        _check_int("seed", self.seed, 0)
        _check_int("polish_steps", self.polish_steps, 0)
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise CharexError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if not (isinstance(self.delta, (int, float)) and math.isfinite(self.delta) and self.delta >= 0):
            raise CharexError(f"delta must be a finite number >= 0, got {self.delta!r}")
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and self.eta > 0):
            raise CharexError(f"eta must be a finite number > 0, got {self.eta!r}")
        for name in ("ref_weight", "surrogate_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise CharexError(f"{name} must be a finite number >= 0, got {w!r}")
        if self.dtype not in DTYPES:
            raise CharexError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.eot, str):
            raise CharexError(f"eot must be a string of channel specs, got {self.eot!r}")
        if self.eot:
            from .make.channels import parse_diff_channels

            parse_diff_channels(self.eot)
        if self.noise_scope not in NOISE_SCOPES:
            raise CharexError(f"noise_scope must be one of {', '.join(NOISE_SCOPES)}, got {self.noise_scope!r}")

    def effective(self) -> "GenerationConfig":
        """The config with the parameters the method ignores set to neutral values.

        vanilla ignores delta, q and k; rc ignores q (one sample per step) and k; rcgm ignores k.
        ``generate`` runs and records the effective config.
        """
        m = self.method
        return dataclasses.replace(
            self,
            delta=0.0 if m == "vanilla" else self.delta,
            q=1 if m in ("vanilla", "rc") else self.q,
            k=self.k if m == "ltrc" else 0,
        )

    @property
    def noise_samples(self) -> int:
        """Weight-noise samples per step: 0 (no noise) when delta == 0, else q."""
        return 0 if self.delta == 0 else self.q

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerationConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CharexError(f"unknown GenerationConfig keys: {sorted(unknown)}")
        return cls(**d)


# Named settings for ``charex generate --preset``: "default" is GenerationConfig's own defaults (chosen on the
# validation pool, docs/research-record.md); "stealth" (chosen on the validation pool too) starts from the owner's natural
# images ("start" is not a GenerationConfig field: the CLI draws the start images), moves them at most 10/255 and
# takes the loss through JPEG 75 as well, for suspects behind an API that re-encodes queries (it is JPEG-robust, not
# hidden: a statistics detector trained on the recipe spots its queries, docs/research-record.md);
# "paper" is the paper's LTRC setting (Table 2 best: k=2, delta=0.03).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "stealth": {"method": "vanilla", "steps": 40, "alpha": 0.25 / 255.0, "eot": "jpeg:75", "start": "natural"},
    "paper": {"method": "ltrc", "n": 100, "steps": 500, "alpha": 0.25 / 255.0, "delta": 0.03, "q": 10, "k": 2},
}


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CharexError(f"{name} must be an integer >= {lo}, got {value!r}")


@dataclass(frozen=True)
class Verdict:
    """Result of checking one suspect model against a fingerprint set.

    Attributes:
        suspect: name or path of the suspect model.
        match_rate: fraction of examples the suspect classifies as their target.
        matches, n: the counts behind ``match_rate``.
        null_rate: mean match rate of independent models (calibration), or None.
        threshold: smallest match rate judged ``derived`` at the calibrated level, or None.
        p_value: P(matches >= observed) for an independent model under the calibrated
            beta-binomial null, or None without calibration.
        decision: ``derived``, ``not derived`` or ``uncalibrated``.
    """

    suspect: str
    match_rate: float
    matches: int
    n: int
    null_rate: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    decision: str = "uncalibrated"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)
