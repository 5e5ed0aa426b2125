"""Audit a fingerprint: is it what charex's recorded procedure gives for the named base model?

An accuser can craft examples that an innocent model "matches" (false-claim attacks, Liu et al., USENIX Security
2024): optimise them to transfer to the model they want to accuse, then claim it was derived. A charex fingerprint
records everything its generation used: the base model's weight digest, the configuration, the seed, and the
digests of the reference and surrogate models. :func:`audit` re-runs generation from that record and reports,
check by check, whether the file's examples and targets are what the procedure gives, and whether its calibration
is what the named calibration models give. Examples optimised toward a model that is not in the record differ from
the re-run; the re-run is an honest fingerprint of the same base, and (with ``suspect``) the auditor sees whether
the suspect matches it too.

Agreement of the examples: generation is deterministic on one platform and dtype (bit-identical re-runs, any
thread count; measured in docs/audit.md), so with the recorded dtype on the recorded platform the examples must
be identical. Across dtypes or CPUs the sign steps drift; the re-run's perturbations (examples minus their start)
then still point the same way (cosine similarity per example), unlike those of a fingerprint optimised toward an
unrecorded model. The tolerances below were chosen on that measurement.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..dtypes import platform_record
from ..errors import CharexError
from ..fingerprint import FingerprintSet, data_digest
from ..models.normalized import state_digest
from ..models.probe import Models, model_device, named_models

# Across dtypes or platforms an example agrees when its perturbation (example minus start) has cosine similarity
# >= COSINE_AGREE with the re-run's, and the examples agree when at least AGREE_FRACTION_MIN of them do. Chosen on
# the measurement in docs/audit.md (scripts/audit_experiment.py): honest bfloat16 vs float32 re-runs from noise
# agree on 97-100% of the examples, a forgery pulled toward an unrecorded model at weight 0.005 on 79%; honest
# natural-start fingerprints agree on 77% only (audit those in their recorded dtype). Across dtypes the decisive
# check is whether the claim against a suspect reproduces on the honest re-run (``suspect``).
COSINE_AGREE = 0.8
AGREE_FRACTION_MIN = 0.85


@dataclass(frozen=True)
class Check:
    """One audit check: ``status`` is ``pass``, ``fail`` or ``skip`` (not checkable with what was given)."""

    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReport:
    """All checks of one audit; ``passed`` when none failed. ``regenerated`` is the re-run fingerprint."""

    checks: list[Check]
    regenerated: FingerprintSet | None = None

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks]}


@dataclass
class AuditInputs:
    """What the owner gives an audit, for every test of a kit (each test's :meth:`audit` takes what it needs).

    Attributes:
        base: the model the kit claims to be of. references, twins, surrogates: the models it records (None: not
            given). calibration: the calibration models it names (None: not re-measured). data: the owner's
            labelled images (a location, read once when a test needs them: :attr:`labelled`). suspect: a model the
            kit is used against; asked: that suspect when the query tests of the base's label space apply to it.
        dtype: re-run generation in this dtype. level: the kit's level. progress: progress bars. parent: the
            checkpoint the base was fine-tuned from, for a kit made with ``--parent`` (None: not given).
    """

    base: nn.Module
    references: dict[str, Any] | None = None
    twins: dict[str, Any] | None = None
    surrogates: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    data: str | None = None
    suspect: Any = None
    asked: Any = None
    dtype: str | None = None
    level: float = 0.01
    progress: bool = True
    parent: Any = None
    _labelled: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels): the owner's labelled images a re-run of the mistake or pair test needs."""
        if self._labelled is None:
            from ..data.starts import labelled_images

            card = getattr(self.base, "card", {}) or {}
            self._labelled = labelled_images(self.data, card.get("input_shape") or [3, 32, 32], card.get("classes"))
        return self._labelled


def audit(fp: FingerprintSet, base: nn.Module, *, references: Models | None = None,
          surrogates: Models | None = None, calibration_references: Models | None = None,
          x0: torch.Tensor | None = None, dtype: str | None = None, suspect: nn.Module | None = None,
          progress: bool = False) -> AuditReport:
    """Re-run the recorded generation of ``fp`` and check it, check by check.

    Args:
        fp: the fingerprint to audit (its file digest was checked on load).
        base: the model the fingerprint claims to be of.
        references, surrogates: the models the fingerprint records (any order; matched by weight digest).
        calibration_references: the models its calibration names; re-measured when given.
        x0: the start images for fingerprints generated from natural images (``meta["start"] == "natural"``).
        dtype: re-run in this dtype instead of the recorded one (the examples then agree within tolerance only).
        suspect: a model the fingerprint is used against: the check "claim reproduces on the re-run" fails when
            the file judges it derived but the honest re-run (calibrated on ``calibration_references`` when
            given) does not.
        progress: progress bar for the re-run.

    Returns:
        An :class:`AuditReport`; ``passed`` when no check failed.

    Example:
        >>> report = audit(FingerprintSet.load("fp.safetensors"), load_model("base.safetensors"))  # doctest: +SKIP
        >>> [(c.name, c.status) for c in report.checks]  # doctest: +SKIP
    """
    from ..make.generate import generate, start_and_targets

    if fp.meta.get("baseline"):
        raise CharexError("this fingerprint was made by a baseline method, not by charex generate; audit re-runs "
                          "charex generation only")
    if fp.meta.get("selection"):
        raise CharexError(f"this fingerprint keeps {fp.n} of {fp.meta['selection'].get('candidates')} candidates "
                          "chosen by conferrability (generate --select-from); audit re-runs plain generation only")
    if fp.images.dtype != torch.uint8:
        raise CharexError("audit needs a quantized (uint8) fingerprint, as generate saves them")
    checks: list[Check] = []
    digest = state_digest(base)
    base_ok = digest == fp.meta.get("base_model_digest")
    checks.append(Check("base model", "pass" if base_ok else "fail",
                        "the model's weight digest is the recorded one" if base_ok else
                        f"the model's weight digest {digest[:16]}... is not the recorded "
                        f"{str(fp.meta.get('base_model_digest'))[:16]}...", {"digest": digest}))
    ordered: dict[str, list[tuple[str, nn.Module]]] = {}
    for role, given in (("references", references), ("surrogates", surrogates)):
        check, ordered[role] = _match_recorded(role, fp.meta.get(role) or [], given)
        checks.append(check)
    natural = fp.meta.get("start") == "natural"
    if natural and x0 is None:
        raise CharexError("this fingerprint started from natural images: give them (charex audit --data DIR)")
    shape = tuple(fp.images.shape[1:])
    num_classes = int(fp.meta.get("num_classes") or 0)
    if num_classes < 1:
        raise CharexError("the fingerprint records no class count; it was not made by charex generate")
    gen = torch.Generator().manual_seed(fp.config.seed)
    _, targets = start_and_targets(gen, fp.n, shape, num_classes, torch.zeros(fp.n, *shape) if natural else None)
    same = torch.equal(targets, fp.targets)
    checks.append(Check("targets follow the seed", "pass" if same else "fail",
                        f"seed {fp.config.seed} draws exactly these {fp.n} targets" if same else
                        f"seed {fp.config.seed} draws other targets for {int((targets != fp.targets).sum())} of "
                        f"{fp.n} examples", {}))
    regen = None
    if base_ok and all(c.status == "pass" for c in checks[1:3]):
        cfg = dataclasses.replace(fp.config, dtype=dtype or fp.config.dtype)
        regen = generate(base, cfg, x0=x0, references=dict(ordered["references"]),
                         surrogates=dict(ordered["surrogates"]), progress=progress)
        checks.append(_compare(fp, regen, x0, same_setting=cfg.dtype == fp.config.dtype and
                               fp.meta.get("platform") == platform_record(model_device(base))))
    else:
        checks.append(Check("examples", "fail", "not re-run: the base model or a recorded reference or surrogate "
                                                "is missing or wrong"))
    checks.append(_base_match(fp, base))
    checks += _calibration(fp, calibration_references)
    if suspect is not None and regen is not None:
        checks.append(_suspect(fp, regen, suspect, calibration_references))
    return AuditReport(checks, regen)


def _match_recorded(role: str, recorded: list[dict[str, str]],
                    given: Models | None) -> tuple[Check, list[tuple[str, nn.Module]]]:
    """The given models in the recorded order, matched by weight digest."""
    by_digest = {state_digest(m): (name, m) for name, m in named_models(given or {})}
    missing = [r["name"] for r in recorded if r["digest"] not in by_digest]
    if missing:
        return Check(f"recorded {role}", "fail", f"not given (or not these weights): {', '.join(missing)}; the "
                                                  f"re-run needs every recorded model"), []
    extra = len(by_digest) - len(recorded)
    note = f" ({extra} given models are not in the record and were not used)" if extra > 0 else ""
    return (Check(f"recorded {role}", "pass", f"{len(recorded)} given, weight digests as recorded{note}"),
            [(r["name"], by_digest[r["digest"]][1]) for r in recorded])


def _compare(fp: FingerprintSet, regen: FingerprintSet, x0: torch.Tensor | None, same_setting: bool) -> Check:
    a, b = fp.images, regen.images
    if torch.equal(a, b) and torch.equal(fp.targets, regen.targets):
        return Check("examples", "pass", "bit-identical to the re-run", {"identical": True})
    start = x0 if x0 is not None else torch.rand(a.shape, generator=torch.Generator().manual_seed(fp.config.seed))
    pa, pb = (fp.pixels() - start).flatten(1), (regen.pixels() - start).flatten(1)
    cos = torch.nn.functional.cosine_similarity(pa, pb, dim=1)
    data = {"identical": False, "pixels_equal": float((a == b).float().mean()),
            "mean_abs_diff_255": float((a.float() - b.float()).abs().mean()),
            "cosine_mean": float(cos.mean()), "agreeing": float((cos >= COSINE_AGREE).float().mean())}
    if same_setting:
        return Check("examples", "fail", "differ from the re-run on the recorded dtype and platform, where generation "
                                         f"is bit-identical ({100 * data['pixels_equal']:.1f}% of pixels equal)", data)
    ok = data["agreeing"] >= AGREE_FRACTION_MIN
    detail = (f"not bit-identical (another dtype or platform): {100 * data['agreeing']:.0f}% of the examples agree "
              f"with the re-run (perturbation cosine >= {COSINE_AGREE}; tolerance >= {100 * AGREE_FRACTION_MIN:.0f}%; "
              f"mean cosine {data['cosine_mean']:.3f})")
    return Check("examples", "pass" if ok else "fail", detail, data)


def _base_match(fp: FingerprintSet, base: nn.Module) -> Check:
    """The base model's match rate on the file's images, computed as generate does (one float32 batch: polished
    examples sit at the decision boundary, where another batch size can flip a near-tie)."""
    from ..make.gradients import ModelForward
    from ..models.probe import eval_mode

    with eval_mode(base), torch.no_grad():
        logits = ModelForward(base, fold_bn=False).logits(fp.pixels().to(model_device(base)))
    k = int((logits.argmax(1).cpu() == fp.targets).sum())
    recorded = fp.meta.get("base_match_rate")
    ok = isinstance(recorded, (int, float)) and round(recorded * fp.n) == k  # recorded as a float32 mean
    return Check("base match", "pass" if ok else "fail",
                 f"the base model assigns {k}/{fp.n} examples to their targets (recorded: {recorded})", {"matches": k})


def _calibration(fp: FingerprintSet, models: Models | None) -> list[Check]:
    from .null import fit_beta_binomial, fit_logit_normal, threshold as null_threshold
    from .verify import match_count

    cal = fp.calibration
    if cal is None:
        return [Check("calibration", "skip", "the fingerprint is not calibrated")]
    rows = cal["references"]
    counts = [r["matches"] for r in rows]
    if cal.get("null") == "logit-normal":
        null = fit_logit_normal(counts, fp.n, cal["s_min"], cal["s_max"])
        same = null["counts"] == cal.get("counts")
    else:
        mu, rho = fit_beta_binomial(counts, fp.n, cal.get("rho_min", 0.1))
        null, same = {"mu": mu, "rho": rho}, abs(rho - cal["rho"]) < 1e-4
    threshold = null_threshold(null, fp.n, cal["level"])
    ok = same and threshold == cal["threshold_matches"] and abs(null["mu"] - cal["mu"]) < 1e-4
    out = [Check("calibration arithmetic", "pass" if ok else "fail",
                 f"the recorded counts give threshold {threshold}/{fp.n} (recorded {cal['threshold_matches']}), "
                 f"null mean {null['mu']:.4f} (recorded {cal['mu']:.4f})", {"threshold": threshold, "mu": null["mu"]})]
    barred = {fp.meta.get("base_model_digest")} | {r["digest"] for k in ("references", "surrogates")
                                                   for r in fp.meta.get(k) or []}
    bad = [r.get("name") for r in rows if r.get("digest") in barred]
    out.append(Check("calibration models independent", "fail" if bad else "pass",
                     f"calibrated on models used in generation or the base itself: {bad}" if bad else
                     "none is the base, a generation reference or a surrogate (by recorded digest)"))
    if models is None:
        out.append(Check("calibration re-measured", "skip", "give the calibration models to re-measure their counts"))
        return out
    by_digest = {state_digest(m): (name, m) for name, m in named_models(models)}
    diffs, missing = [], []
    for r in rows:
        if r.get("digest") not in by_digest:
            missing.append(r.get("name"))
            continue
        name, m = by_digest[r["digest"]]
        k = match_count(m, fp, name)
        if k != r["matches"]:
            diffs.append(f"{r.get('name')}: {k} matches, recorded {r['matches']}")
    status = "fail" if diffs or missing else "pass"
    detail = "; ".join(diffs + ([f"not given: {', '.join(map(str, missing))}"] if missing else [])) or \
        f"all {len(rows)} calibration models match as recorded"
    out.append(Check("calibration re-measured", status, detail))
    return out


def _suspect(fp: FingerprintSet, regen: FingerprintSet, suspect: nn.Module, calibration_references: Models | None
             ) -> Check:
    """Does the claim against ``suspect`` hold on the honest re-run too? The re-run is calibrated on the
    calibration models when they are given, else it borrows the file's calibration. Decisive across dtypes and
    platforms, where the examples agree only within a tolerance."""
    from .verify import calibrate, match_count, verdict_from_count

    if fp.calibration is None:
        return Check("claim reproduces on the re-run", "skip", "the fingerprint is not calibrated: no claim to check")
    if calibration_references is not None:
        spread = (fp.calibration.get("s_min", 0.5), fp.calibration.get("s_max", 2.0))
        regen = calibrate(regen, calibration_references, level=fp.calibration["level"], spread=spread)
    else:
        regen = regen.with_calibration(fp.calibration)
    k_file, k_regen = match_count(suspect, fp, "suspect"), match_count(suspect, regen, "suspect")
    v_file, v_regen = verdict_from_count(fp, "suspect", k_file), verdict_from_count(regen, "suspect", k_regen)
    data = {"matches_file": k_file, "matches_regenerated": k_regen, "decision_file": v_file.decision,
            "decision_regenerated": v_regen.decision, "threshold_regenerated": regen.calibration["threshold_matches"]}
    fails = v_file.decision == "derived" and v_regen.decision != "derived"
    return Check("claim reproduces on the re-run", "fail" if fails else "pass",
                 f"the suspect matches {k_file}/{fp.n} of the file's examples ({v_file.decision}) and {k_regen}/"
                 f"{fp.n} of the re-run's ({v_regen.decision}, threshold {data['threshold_regenerated']})", data)


def recorded_inputs(fp: FingerprintSet, base: nn.Module, roles: dict[str, Models | None],
                     images: torch.Tensor | None, labels: torch.Tensor | None
                     ) -> tuple[list[Check], dict[str, list[tuple[str, nn.Module]]], bool, bool]:
    """The checks a re-run from the owner's models and labelled images starts with: the base model, each recorded
    role's models (matched by digest), the labelled images' digest. Returns (checks, the role's models in recorded
    order, base ok, data ok)."""
    checks: list[Check] = []
    digest = state_digest(base)
    base_ok = digest == fp.meta.get("base_model_digest")
    checks.append(Check("base model", "pass" if base_ok else "fail",
                        "the model's weight digest is the recorded one" if base_ok else
                        f"the model's weight digest {digest[:16]}... is not the recorded one", {"digest": digest}))
    ordered: dict[str, list[tuple[str, nn.Module]]] = {}
    for role, given in roles.items():
        check, ordered[role] = _match_recorded(role, fp.meta.get(role) or [], given)
        checks.append(check)
    recorded = fp.meta.get("data_digest")
    if images is None or labels is None:
        checks.append(Check("labelled images", "fail", "not given: the re-run needs the owner's labelled images"))
        data_ok = False
    else:
        got = data_digest(images, labels)
        data_ok = recorded is None or got == recorded
        checks.append(Check("labelled images", "pass" if data_ok else "fail",
                            "no digest recorded (a mistake set made before kits)" if recorded is None else
                            "their digest is the recorded one" if data_ok else
                            f"their digest {got[:16]}... is not the recorded {str(recorded)[:16]}..."))
    return checks, ordered, base_ok, data_ok


def rerun_check(fp: FingerprintSet, regen: FingerprintSet | None, what: str, needed: str) -> Check:
    """Whether a re-made query set (None: not re-run, for want of ``needed``) equals the file's images and targets."""
    if regen is None:
        return Check("queries", "fail", f"not re-run: {needed} are missing or wrong")
    same = torch.equal(regen.images, fp.images) and torch.equal(regen.targets, fp.targets)
    return Check("queries", "pass" if same else "fail", f"the {fp.n} {what} equal the re-run" if same else
                 f"differ from the re-run ({regen.n} queries re-made, {fp.n} in the file)")


def independence_check(fp: FingerprintSet, rows: list[dict[str, Any]], roles: tuple[str, ...]) -> Check:
    """Whether no calibration model (``rows``: name and digest) is the base or a model of a recorded role."""
    barred = {fp.meta.get("base_model_digest")} | {r["digest"] for k in roles for r in fp.meta.get(k) or []}
    bad = [r["name"] for r in rows if r["digest"] in barred]
    who = "the base or a twin" if roles == ("twins",) else "the base, a twin or a reference"
    return Check("calibration models independent", "fail" if bad else "pass",
                 f"calibrated on {who}: {bad}" if bad else f"none is {who} (by recorded digest)")
