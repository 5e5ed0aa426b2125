"""``charex reproduce heldout``: an evaluation that cannot flatter itself.

Independent models come in four disjoint pools: ``generation`` (references that reference-contrastive
methods push away from; no other method sees them), ``validation`` (where defaults and hyperparameters
are chosen), ``calibration`` (the verifier's null) and ``heldout`` (used only for reported numbers).
Derived copies are made as a thief ships them: global magnitude pruning in rounds with retraining
until within a point of the base, fine-tuning on the thief's half of the data, int8, and students distilled
from the base's labels or probabilities. Every copy's accuracy is reported beside its match rate; a copy more
than ``useful_drop`` points below the base (a student: ``student_useful_drop``) is reported apart, as no longer
a useful theft. Surrogate-aware rows use the owner's own students (``surrogates``, on the owner's half).

Output folder: models/ (lineage cache), fingerprints/, rates/POOL/ (one JSON per method: a finished unit),
results-POOL.json, table-POOL.md, fig-tradeoff-POOL.png, provenance-POOL.json (POOL: validation or heldout).
Every step first looks for its finished output (resumable).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from ..data import load_cifar10
from ..data.cifar10 import ArrayDataset, sample_images, thief_split
from ..derive import quantize_int8
from ..derive.distill import distill_model
from ..derive.finetune import finetune_model
from ..derive.prune import prune_chain
from ..dtypes import resolve_dtype
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..lineage import is_student  # noqa: F401  (benchmarks import it from here)
from ..make.generate import generate
from ..lineage import DEFAULT_LR, base_name, distill_name, finetune_name, iterative_prune_name, parent_of
from ..judge.metrics import roc_auc, tpr_at_fpr
from ..models import load_model
from ..models.loading import bundled_dir
from ..models.probe import model_device
from ..train import TrainConfig, accuracy, train_from_scratch
from ..types import GenerationConfig
from ..judge.null import S_MAX, S_MIN
from ..judge.kit import Kit
from ..judge.query import LocalSuspect, judge
from ..judge.verify import calibrate
from ..zoo import ModelCache
from .provenance import provenance, write_json

POOLS = ("generation", "validation", "calibration", "heldout")


class Models:
    """Builds (or loads from the lineage cache) every model a profile names."""

    def __init__(self, profile: dict[str, Any], train: ArrayDataset, test: ArrayDataset, out: Path,
                 progress: bool, say: Callable[[str], None]) -> None:
        self.profile, self.train, self.test = profile, train, test
        self.cache = ModelCache(out / "models")
        self.folders = [bundled_dir()] + [Path(f) for f in profile.get("model_folders", [])]
        self.progress, self.say = progress, say

    def get(self, lineage: str, make: Callable[[], nn.Module]) -> nn.Module:
        self.cache.adopt(lineage, self.train.digest, self.folders)
        if not self.cache.path(lineage, self.train.digest).is_file():
            self.say(f"making {lineage}")
        return self.cache.get_or_create(lineage, make, self.train.digest)

    def trained(self, spec: dict[str, Any]) -> nn.Module:
        """A model trained from scratch: {arch, arch_kwargs, seed, epochs} and optionally lr (peak rate)."""
        arch, kw, seed, epochs = spec["arch"], spec.get("arch_kwargs", {}), spec["seed"], spec["epochs"]
        lr = float(spec.get("lr", DEFAULT_LR))
        return self.get(base_name(arch, kw, seed, epochs, lr), lambda: train_from_scratch(
            arch, kw, seed, self.train, self.test, TrainConfig(epochs=epochs, seed=seed, lr=lr), self.progress))

    def derived(self, base: nn.Module, pool: str) -> dict[str, dict[str, nn.Module]]:
        """Group name -> lineage -> derived copy, per the profile's ``derived`` block.

        Repeats ``r < validation_repeats`` of pruning and fine-tuning serve the ``validation`` pool (where
        defaults are chosen), the others the ``heldout`` pool, so no reported copy took part in a choice.
        int8 is deterministic and serves both. Students (``distill``: one spec or a list, each with its ``group``
        name, ``arch``, ``epochs``, ``split``, ``seed``, ``repeats`` and optionally ``temperature`` for probability
        distillation and ``queries`` for a query budget) are reported on ``heldout`` only.
        """
        d, parent, out = self.profile["derived"], parent_of(base.card), {}
        nval = d.get("validation_repeats", 0)

        def repeats(n: int) -> range:
            return range(nval) if pool == "validation" else range(nval, n)

        pr = d.get("prune")
        if pr:
            data, data_name = thief_split(self.train, pr.get("split", "all"))
            ratios = list(pr["ratios"])
            for r in repeats(pr["repeats"]):
                names = [iterative_prune_name(parent, x, pr["epochs_per_round"], pr["tolerance"], data_name, r)
                         for x in ratios]
                for name in names:
                    self.cache.adopt(name, self.train.digest, self.folders)
                if not all(self.cache.path(name, self.train.digest).is_file() for name in names):
                    self.say(f"pruning chain {ratios} (repeat {r}) on {data_name}")
                    for m, _ in prune_chain(base, ratios, data=data, test=self.test,
                                            epochs_per_round=pr["epochs_per_round"], tolerance=pr["tolerance"],
                                            max_extra_epochs=pr["max_extra_epochs"], seed=r, lr=pr["lr"],
                                            data_name=data_name, progress=self.progress):
                        self.cache.put(m, self.train.digest)
                for x, name in zip(ratios, names):
                    out.setdefault(f"prune {round(100 * x)}%", {})[name] = self.cache.get(name, self.train.digest)
        ft = d.get("finetune")
        if ft:
            data, data_name = thief_split(self.train, ft["split"])
            for r in repeats(ft["repeats"]):
                lineage = finetune_name(parent, False, ft["lr"], ft["epochs"], data_name, r)
                out.setdefault("fine-tune", {})[lineage] = self.get(lineage, lambda r=r: self._with_acc(finetune_model(
                    base, data, epochs=ft["epochs"], lr=ft["lr"], seed=r, data_name=data_name,
                    progress=self.progress)[0]))
        if d.get("int8"):
            q = quantize_int8(base)
            q.card["test_accuracy"] = accuracy(q, self.test)
            out["int8"] = {q.card["lineage"]: q}
        ds = d.get("distill")
        for st in (ds if isinstance(ds, list) else [ds] if ds else []) if pool == "heldout" else []:
            for seed in range(st["seed"], st["seed"] + st.get("repeats", 1)):
                out.setdefault(st.get("group", "distilled"), {}).update([self.student(base, st, seed)])
        return out

    def surrogates(self, base: nn.Module) -> dict[str, nn.Module]:
        """The owner's own students of the base (profile ``surrogates``: distill specs, on the owner's data),
        for surrogate-aware rows; lineage -> model."""
        return dict(self.student(base, st, st["seed"]) for st in self.profile.get("surrogates", []))

    def student(self, base: nn.Module, st: dict[str, Any], seed: int) -> tuple[str, nn.Module]:
        """(lineage, student) of one distill spec (``arch``, ``epochs``, ``split``, ``temperature``, ``queries``)."""
        data, data_name = thief_split(self.train, st["split"])
        lineage = distill_name(parent_of(base.card), st["arch"], st["epochs"], data_name, seed, st.get("temperature"),
                               st.get("queries"))
        return lineage, self.get(lineage, lambda: distill_model(
            base, data, arch=st["arch"], arch_kwargs=st.get("arch_kwargs", {}), epochs=st["epochs"], seed=seed,
            data_name=data_name, test=self.test, temperature=st.get("temperature"), queries=st.get("queries"),
            progress=self.progress)[0])

    def _with_acc(self, m: nn.Module) -> nn.Module:
        m.card["test_accuracy"] = accuracy(m, self.test)
        return m


def pool_models(models: Models, profile: dict[str, Any], report_pool: str) -> dict[str, dict[str, nn.Module]]:
    """Pool name -> lineage -> model for the generation, calibration and reported pools; all four pools must be
    disjoint (checked by lineage, and by weight digest among the models built)."""
    from ..lineage import base_name
    from ..models.normalized import state_digest

    seen: dict[str, str] = {}
    for pool in POOLS:
        for spec in profile["pools"].get(pool, []):
            name = base_name(spec["arch"], spec.get("arch_kwargs", {}), spec["seed"], spec["epochs"], spec.get("lr"))
            if name in seen:
                raise CharexError(f"{name} is in both the {seen[name]} and the {pool} pool")
            seen[name] = pool
    pools: dict[str, dict[str, nn.Module]] = {}
    owner: dict[str, str] = {}
    for pool in ("generation", "calibration", report_pool):
        for spec in profile["pools"].get(pool, []):
            m = models.trained(spec)
            d = state_digest(m)
            if d in owner:
                raise CharexError(f"{m.card['lineage']} is in both the {owner[d]} and the {pool} pool")
            owner[d] = pool
            pools.setdefault(pool, {})[m.card["lineage"]] = m
    return pools


def method_config(spec: dict[str, Any], defaults: dict[str, Any]) -> GenerationConfig:
    """The GenerationConfig of one method row (``references`` is not a config field)."""
    keys = {"method", "n", "steps", "alpha", "delta", "q", "k", "seed", "dtype", "ref_weight", "surrogate_weight", "eot"}
    merged = {**defaults, **spec}
    return GenerationConfig(**{k: v for k, v in merged.items() if k in keys}).effective()


def run_method(spec: dict[str, Any], profile: dict[str, Any], base: nn.Module, pools: dict[str, dict[str, nn.Module]],
               derived: dict[str, dict[str, nn.Module]], out: Path, report_pool: str, progress: bool,
               say: Callable[[str], None], real: ArrayDataset | None = None,
               only_cached: bool = False) -> dict[str, Any] | None:
    """Generate (or load) one method's fingerprint, calibrate it and measure every model; resumable.
    ``only_cached``: return the saved result if it is still valid, else None (nothing is run).

    A row with ``baseline`` (``frontier``, ``ipguard``, ``sensitive``, ``disagree``; parameters in ``params``) makes
    that baseline's fingerprint from ``real`` images (the test split) instead of characteristic examples (with
    ``references``, they go to the baseline). A row with ``surrogates: true`` (or a count: the first k) pulls its
    examples toward the owner's students of the base (``pools["surrogates"]``, the profile's ``surrogates``). A row
    with ``select: {"candidates": N}`` generates N candidates and keeps the ``n`` most conferrable
    (:func:`charex.make.select.select_conferrable`), judged by the generation references and surrogates it left out of
    the loss.
    """
    cfg = method_config(spec, profile["generation"])
    refs = _references(pools.get("generation", {}), spec.get("references", False))
    surs = _references(pools.get("surrogates", {}), spec.get("surrogates", False))
    select = spec.get("select")  # keep the n most conferrable of more candidates, judged by the models left out
    if select:
        if not isinstance(select, dict) or not isinstance(select.get("candidates"), int) or \
                select["candidates"] < cfg.n:
            raise CharexError(f"{spec['name']}: select needs candidates >= n, got {select!r}")
        if "baseline" in spec or spec.get("start", "noise") != "noise":
            raise CharexError(f"{spec['name']}: select works on noise-start characteristic examples only")
        sel_refs = {k: m for k, m in pools.get("generation", {}).items() if k not in refs}
        sel_surs = {k: m for k, m in pools.get("surrogates", {}).items() if k not in surs}
        if not sel_refs or not sel_surs:
            raise CharexError(f"{spec['name']}: select needs generation references and surrogates left out of "
                              "the loss (set references and surrogates to a count below the pool's size)")
    baseline = {"name": spec["baseline"], "params": spec.get("params", {}), "n": cfg.n, "seed": cfg.seed} \
        if "baseline" in spec else None
    start = spec.get("start", "noise")
    key = {"config": baseline or cfg.to_dict(), "references": sorted(refs), "report_pool": report_pool,
           **({"surrogates": sorted(surs)} if surs else {}),
           **({"select": {**select, "references": sorted(sel_refs), "surrogates": sorted(sel_surs)}} if select else {}),
           **({"start": start} if start != "noise" else {}),
           "calibration": sorted(pools.get("calibration", {})), "reported": sorted(pools.get(report_pool, {})),
           "derived": {g: sorted(v) for g, v in derived.items()}, "level": profile["level"],
           "null": {"kind": "logit-normal", "spread": list(profile.get("spread", (S_MIN, S_MAX)))}}
    rates_path = out / "rates" / report_pool / f"{spec['name']}.json"
    if rates_path.is_file():
        done = json.loads(rates_path.read_text())
        if done.get("key") == key:  # the key decides validity; the row's label may have been renamed
            return {**done, "name": spec["name"], "spec": spec}
    if only_cached:
        return None
    fp_path = out / "fingerprints" / f"{spec['name']}.safetensors"
    fp = FingerprintSet.load(fp_path) if fp_path.is_file() else None
    resolved = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, model_device(base)))  # as generate records it
    if baseline is not None:
        made = fp.meta.get("baseline", {}) if fp is not None else {}
        stale = fp is None or made.get("name") != baseline["name"] or fp.n != cfg.n or fp.config.seed != cfg.seed \
            or any(made.get("params", {}).get(k) != v for k, v in baseline["params"].items()) or \
            sorted(r["name"] for r in fp.meta.get("references", [])) != sorted(refs)
    else:
        def used(key: str) -> list[str]:  # the models generation used (not those that selected)
            return sorted(r["name"] for r in fp.meta.get(key, []) if r.get("role") != "selection")

        stale = fp is None or fp.config != resolved or fp.meta.get("start", "noise") != start or \
            used("references") != sorted(refs) or used("surrogates") != sorted(surs) or \
            fp.meta.get("selection", {}).get("candidates") != (select or {}).get("candidates")
    if stale:
        say(f"generating {spec['name']}")
        t0 = time.perf_counter()
        if baseline is not None:
            from ..baselines import BASELINES

            if real is None:
                raise CharexError(f"baseline {baseline['name']} needs real images")
            fp = BASELINES[baseline["name"]](base, real.images, real.labels, n=cfg.n, seed=cfg.seed,
                                             **baseline["params"], **({"references": list(refs.values())} if refs else {}))
        elif start == "natural":  # start from the owner's own real images instead of uniform noise
            if real is None:
                raise CharexError("start: natural needs real images")
            x0 = sample_images(real.images, real.labels, cfg.n, cfg.seed)[0]
            fp = generate(base, cfg, x0=x0, references=refs or None, surrogates=surs or None, progress=progress)
            fp.meta["start"] = "natural"
        elif select:
            from ..make.select import generate_conferrable

            fp = generate_conferrable(base, cfg, select["candidates"], references=refs or None,
                                      surrogates=surs or None, selection_references=sel_refs,
                                      selection_surrogates=sel_surs, progress=progress)
        else:
            fp = generate(base, cfg, references=refs or None, surrogates=surs or None, progress=progress)
        fp.meta["generation_seconds"] = round(time.perf_counter() - t0, 1)
        fp.save(fp_path)
    cal = calibrate(fp, pools["calibration"], level=profile["level"], spread=tuple(key["null"]["spread"]))
    c = cal.calibration or {}

    kit = Kit(tests=(cal,), level=profile["level"], single=True)  # one test, judged like any suspect of a kit

    def row(m: nn.Module, name: str) -> dict[str, Any]:
        v = judge(kit, LocalSuspect(m, name), name).to_dict()
        return {"matches": v["matches"], "rate": v["match_rate"], "p_value": v["p_value"],
                "derived": v["decision"] == "derived", "accuracy": m.card.get("test_accuracy")}

    base_acc = base.card.get("test_accuracy")
    reported = {n: row(m, n) for n, m in pools[report_pool].items()}
    groups = {g: {n: row(m, n) for n, m in ms.items()} for g, ms in derived.items()}
    result = {"name": spec["name"], "spec": spec, "key": key, "config": cfg.to_dict(),
              "generation_seconds": fp.meta.get("generation_seconds"), "base_match_rate": fp.meta["base_match_rate"],
              "calibration": {**{k: c[k] for k in ("null", "mu", "s_min", "s_max", "threshold_matches", "strength")
                                 if k in c},
                              "counts": {r["name"]: r["matches"] for r in c["references"]}},
              "independent": reported, "derived": groups,
              "summary": summarize_rows(reported, groups, base_acc, profile["useful_drop"],
                                        profile.get("student_useful_drop", 3.0))}
    write_json(rates_path, result)
    return result


def _references(pool: dict[str, nn.Module], which: bool | int) -> dict[str, nn.Module]:
    """The generation references (or surrogates) of a method row: none (false), the whole pool (true) or its
    first k (int)."""
    if isinstance(which, bool):
        return dict(pool) if which else {}
    if not isinstance(which, int) or not 0 <= which <= len(pool):
        raise CharexError(f"references and surrogates must be true, false or 0..{len(pool)}, got {which!r}")
    return dict(list(pool.items())[:which])


def summarize_rows(independent: dict[str, dict[str, Any]], groups: dict[str, dict[str, dict[str, Any]]],
                   base_acc: float | None, useful_drop: float, student_drop: float = 3.0) -> dict[str, Any]:
    """Transferability, robustness per group (useful copies only), uniqueness, AUC, TPR at 1% FPR and false
    claims, all in percent; copies more than ``useful_drop`` points below the base (students: ``student_drop``)
    are counted apart. AUC and TPR score the weight copies; students get their own ``student_auc``."""
    neg = [r["rate"] for r in independent.values()]
    transfer = 100 * float(np.mean(neg))
    useful_pos: list[float] = []
    student_pos: list[float] = []
    out_groups: dict[str, Any] = {}
    for g, rows in groups.items():
        drop = student_drop if is_student(g) else useful_drop
        useful = {n: r for n, r in rows.items() if not _lost(r, base_acc, drop)}
        lost = {n: r for n, r in rows.items() if n not in useful}
        for label, sel in (("", useful), (" (not useful)", lost)):
            if not sel:
                continue
            rob = 100 * float(np.mean([r["rate"] for r in sel.values()]))
            accs = [r["accuracy"] for r in sel.values() if r["accuracy"] is not None]
            out_groups[g + label] = {
                "robustness": rob, "uniqueness": rob - transfer, "n_models": len(sel),
                "detected": sum(r["derived"] for r in sel.values()),
                "accuracy_min": 100 * min(accs) if accs else None, "accuracy_max": 100 * max(accs) if accs else None}
        (student_pos if is_student(g) else useful_pos).extend(r["rate"] for r in useful.values())
    return {"transferability": transfer, "transferability_max": 100 * max(neg), "groups": out_groups,
            "auc": roc_auc(useful_pos, neg), "tpr_at_1pct_fpr": 100 * tpr_at_fpr(useful_pos, neg, 0.01),
            "false_claims": sum(r["derived"] for r in independent.values()), "n_independent": len(neg),
            "n_useful_derived": len(useful_pos),
            **({"student_auc": roc_auc(student_pos, neg), "n_useful_students": len(student_pos)} if student_pos else {})}


def _lost(r: dict[str, Any], base_acc: float | None, useful_drop: float) -> bool:
    return base_acc is not None and r["accuracy"] is not None and 100 * (base_acc - r["accuracy"]) > useful_drop


def run_heldout(profile: dict[str, Any], data: str | Path | None, out: str | Path, *, pool: str = "heldout",
                progress: bool = True, say: Callable[[str], None] = print,
                methods: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every method of ``profile``, reporting on ``pool`` (``heldout`` or ``validation``).

    ``methods``: run only the rows of these names; the results also hold every other row whose saved result is
    still valid (nothing else is run).
    """
    if pool not in ("heldout", "validation"):
        raise CharexError(f"report pool must be heldout or validation, got {pool!r}")
    if methods:
        unknown = set(methods) - {m["name"] for m in profile["methods"]}
        if unknown:
            raise CharexError(f"no such method rows in the profile: {sorted(unknown)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"provenance-{pool}.json", provenance({**profile, "report_pool": pool}))
    train, test = load_cifar10(data, "train"), load_cifar10(data, "test")
    models = Models(profile, train, test, out, progress, say)
    if isinstance(profile["base"], str):  # a model file or bundled:NAME
        base = load_model(profile["base"])
        base.card["test_accuracy"] = accuracy(base, test)  # as loaded (bundled models are stored float16)
    else:
        base = models.trained(profile["base"])
    derived = models.derived(base, pool)
    pools = pool_models(models, profile, pool)
    if profile.get("surrogates"):
        pools["surrogates"] = models.surrogates(base)
    rows = [r for m in profile["methods"] if pool in m.get("pools", ("heldout", "validation"))
            if (r := run_method(m, profile, base, pools, derived, out, pool, progress, say, real=test,
                                only_cached=bool(methods) and m["name"] not in methods)) is not None]
    accs = {"base": base.card["test_accuracy"],
            "pools": {p: {n: m.card.get("test_accuracy") for n, m in ms.items()} for p, ms in pools.items()},
            "derived": {g: {n: m.card.get("test_accuracy") for n, m in ms.items()} for g, ms in derived.items()}}
    results = {"profile": profile, "report_pool": pool, "accuracy": accs, "rows": rows}
    write_json(out / f"results-{pool}.json", results)
    from .._io import atomic_write_text
    from ..report.tables import heldout_markdown

    atomic_write_text(out / f"table-{pool}.md", heldout_markdown(results))
    from ..report.figures import heldout_tradeoff

    heldout_tradeoff(rows, out / f"fig-tradeoff-{pool}.png", chosen=profile.get("default_method"), pool=pool)
    return results
