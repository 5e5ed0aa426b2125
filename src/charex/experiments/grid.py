"""``charex reproduce cifar10``: the paper's Table 2 grid, resumable, with provenance.

Layout of the output folder:
  models/        lineage-named model cache (base, independent variants, pruned copies)
  fingerprints/  one fingerprint file per (method, delta, k)
  rates/         one JSON of per-model match rates per fingerprint (a finished unit of work)
  results.json, table2.md, table2.csv, provenance.json, report.md, fig-*.png
Every step first looks for its finished output, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..data import load_cifar10
from ..derive import prune_model
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..make.generate import generate
from ..lineage import base_name, prune_name
from ..judge.metrics import evaluate
from ..models.loading import bundled_dir
from ..train import TrainConfig, accuracy, train_from_scratch
from ..types import GenerationConfig
from ..zoo import ModelCache
from ..report.paper import method_label
from .provenance import provenance, write_json


def load_profile(profile: str | Path) -> dict[str, Any]:
    """A profile by name (``quick``, ``paper``) or a JSON file path."""
    p = Path(profile)
    if not p.is_file():
        folder = resources.files("charex.experiments") / "profiles"
        p = Path(str(folder / f"{profile}.json"))
        if not p.is_file():
            p = Path(str(folder / f"cifar10-{profile}.json"))
    if not p.is_file():
        raise CharexError(f"unknown profile {profile!r}: use quick, paper or a JSON file")
    return json.loads(p.read_text())


def set_name(m: dict[str, Any]) -> str:
    """File-friendly name of one grid cell, e.g. ``ltrc-k2-d0.03``."""
    k = f"-k{m['k']}" if m.get("k") else ""
    return f"{m['method']}{k}-d{m.get('delta', 0):g}"


def model_specs(profile: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    """(arch, kwargs, seed) of the base (first) and every independent model of a grid profile."""
    arch, kw = profile["arch"], profile["arch_kwargs"]
    specs = [(arch, kw, profile["base_seed"])] + [(arch, kw, s) for s in profile["independent_seeds"]]
    return specs + [(o["arch"], o["arch_kwargs"], o["seed"]) for o in profile.get("other_arch", [])]


def prune_specs(profile: dict[str, Any]) -> list[tuple[float, int]]:
    """(ratio, repeat) of every pruned copy of a grid profile."""
    pr = profile["prune"]
    return [(ratio, r) for ratio in pr["ratios"] for r in range(pr["repeats"])]


class _Grid:
    """The models of one grid profile, each built (or loaded from the lineage cache) on demand."""

    def __init__(self, profile: dict[str, Any], data: str | Path | None, out: Path, progress: bool,
                 say: Callable[[str], None]) -> None:
        self.profile, self.out, self.progress, self.say = profile, out, progress, say
        self.train, self.test = load_cifar10(data, "train"), load_cifar10(data, "test")
        self.cache = ModelCache(out / "models")
        self.epochs = int(profile["train_epochs"])

    def model_specs(self) -> list[tuple[str, dict[str, Any], int]]:
        return model_specs(self.profile)

    def prune_specs(self) -> list[tuple[float, int]]:
        return prune_specs(self.profile)

    def trained(self, arch: str, kw: dict[str, Any], seed: int) -> nn.Module:
        lineage = base_name(arch, kw, seed, self.epochs)
        digest = self.train.digest
        self.cache.adopt(lineage, digest, [bundled_dir()])
        if not self.cache.path(lineage, digest).is_file():
            self.say(f"training {lineage}")
        return self.cache.get_or_create(lineage, lambda: train_from_scratch(
            arch, kw, seed, self.train, self.test, TrainConfig(epochs=self.epochs, seed=seed), self.progress), digest)

    def base(self) -> nn.Module:
        return self.trained(*self.model_specs()[0])

    def independent(self) -> dict[str, nn.Module]:
        return {m.card["lineage"]: m for m in (self.trained(*spec) for spec in self.model_specs()[1:])}

    def pruned(self, base: nn.Module, ratio: float, r: int) -> nn.Module:
        pr = self.profile["prune"]
        if pr.get("until_within") is not None:
            return self._pruned_until(base, ratio, r, pr)
        lineage = prune_name(base.card["lineage"], pr["scope"], ratio, pr["finetune_epochs"], r)

        def make() -> nn.Module:
            self.say(f"pruning {int(ratio * 100)}% (repeat {r}) and fine-tuning {pr['finetune_epochs']} epoch(s)")
            m, _ = prune_model(base, ratio, scope=pr["scope"], finetune_epochs=pr["finetune_epochs"], data=self.train,
                               seed=r, lr=pr["lr"], progress=self.progress)
            m.card["test_accuracy"] = accuracy(m, self.test)
            return m

        return self.cache.get_or_create(lineage, make, self.train.digest)

    def _pruned_until(self, base: nn.Module, ratio: float, r: int, pr: dict[str, Any]) -> nn.Module:
        """A copy pruned the paper's way (Han et al.: global magnitude pruning in rounds, each retrained
        ``epochs_per_round``), then retrained until within ``until_within`` of the base's accuracy or out of
        ``max_extra_epochs``; on the thief's half of the training set when ``data`` is ``half-b``."""
        from ..data.cifar10 import thief_split
        from ..derive.prune import prune_until_useful
        from ..lineage import iterative_prune_name

        data, name = thief_split(self.train, pr.get("data", "all"))
        epr, tol = int(pr.get("epochs_per_round", 1)), float(pr["until_within"])
        lineage = iterative_prune_name(base.card["lineage"], ratio, epr, tol, name, r)

        def make() -> nn.Module:
            self.say(f"pruning {int(ratio * 100)}% in rounds (repeat {r}), retrained until within {100 * tol:g} "
                     "point(s)")
            m, _ = prune_until_useful(base, ratio, data=data, test=self.test, epochs_per_round=epr, tolerance=tol,
                                      max_extra_epochs=int(pr.get("max_extra_epochs", 3)), seed=r,
                                      lr=float(pr.get("lr", 0.01)), data_name=name, progress=self.progress)
            return m

        return self.cache.get_or_create(lineage, make, self.train.digest)

    def all_pruned(self, base: nn.Module) -> dict[str, dict[str, nn.Module]]:
        out: dict[str, dict[str, nn.Module]] = {}
        for ratio, r in self.prune_specs():
            m = self.pruned(base, ratio, r)
            out.setdefault(f"{int(round(ratio * 100))}%", {})[m.card["lineage"]] = m
        return out


def run_grid(profile: dict[str, Any], data: str | Path | None, out: str | Path, *, progress: bool = True,
             say: Callable[[str], None] = print, ray_address: str | None = None) -> dict[str, Any]:
    """Run (or resume) the grid of ``profile`` into ``out`` and return the results.

    With ``ray_address`` the cells run first as Ray tasks in dependency order (all models; then the pruned
    copies, which need the base; then one task per method cell, which needs every model), writing the
    lineage cache and the per-cell rates under ``out`` (a path every worker shares); the run then assembles
    the results from those finished cells exactly as a local run does, so both give the same results.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "provenance.json", provenance(profile))
    if ray_address:
        _run_cells_on_ray(profile, data, out, ray_address, say)
    g = _Grid(profile, data, out, progress, say)
    base = g.base()
    independent = g.independent()
    pruned = g.all_pruned(base)
    accs = {"base": base.card.get("test_accuracy"),
            "independent": {k: m.card.get("test_accuracy") for k, m in independent.items()},
            "pruned": {gr: {k: m.card.get("test_accuracy") for k, m in ms.items()} for gr, ms in pruned.items()}}
    rows = run_methods(base, independent, pruned, profile, out, progress=progress, say=say)
    return finish(out, profile, accs, rows, base, data, table="table2")


def _cell(profile: dict[str, Any], data: str | Path | None, out: str, kind: str, arg: Any) -> str:
    """One grid cell, run in a Ray worker: a model, a pruned copy or a method's rates (results land in ``out``)."""
    import torch

    torch.set_num_threads(1)
    g = _Grid(profile, data, Path(out), False, lambda s: None)
    if kind == "model":
        return str(g.trained(*arg).card["lineage"])
    base = g.base()
    if kind == "prune":
        return str(g.pruned(base, *arg).card["lineage"])
    run_methods(base, g.independent(), g.all_pruned(base), {**profile, "methods": [arg]}, Path(out), progress=False)
    return set_name(arg)


def _run_cells_on_ray(profile: dict[str, Any], data: str | Path | None, out: Path, address: str,
                      say: Callable[[str], None]) -> None:
    from .._ray import connect

    ray = connect(address)
    task = ray.remote(num_cpus=1)(_cell)
    root = str(out.resolve())
    data_s = str(Path(data).resolve()) if data else None
    specs = model_specs(profile)
    say(f"ray: {len(specs)} model cells")
    ray.get([task.remote(profile, data_s, root, "model", spec) for spec in specs])
    prunes = prune_specs(profile)
    say(f"ray: {len(prunes)} pruned-copy cells")
    ray.get([task.remote(profile, data_s, root, "prune", spec) for spec in prunes])
    say(f"ray: {len(profile['methods'])} method cells")
    ray.get([task.remote(profile, data_s, root, "method", m) for m in profile["methods"]])


def run_methods(base: nn.Module, independent: dict[str, nn.Module], derived: dict[str, dict[str, nn.Module]],
                profile: dict[str, Any], out: Path, *, progress: bool = True,
                say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Generate (or load) one fingerprint per method cell and measure every model on it; resumable per cell."""
    gen = profile["generation"]
    rows = []
    for mspec in profile["methods"]:
        name = set_name(mspec)
        rates_path = out / "rates" / f"{name}.json"
        cfg = GenerationConfig(method=mspec["method"], n=gen["n"], steps=gen["steps"], alpha=gen["alpha"],
                               delta=mspec.get("delta", 0.0), q=gen["q"], k=mspec.get("k", 0), seed=gen["seed"],
                               dtype=gen.get("dtype", "float32")).effective()
        if rates_path.is_file():
            done = json.loads(rates_path.read_text())
            if done.get("config") == cfg.to_dict() and set(done["evaluation"]["independent"]) == set(independent) \
                    and {g: set(v) for g, v in done["evaluation"]["derived"].items()} == {g: set(v) for g, v in derived.items()}:
                rows.append(done)
                continue
            say(f"{name}: config or models changed since the saved result; recomputing")
        fp_path = out / "fingerprints" / f"{name}.safetensors"
        fp = FingerprintSet.load(fp_path) if fp_path.is_file() else None
        if fp is None or fp.config != cfg:
            say(f"generating {name}")
            fp = generate(base, cfg, progress=progress)
            fp.save(fp_path)
        ev = evaluate(fp, derived, independent, base)
        row = {"name": name, "label": method_label(mspec["method"], mspec.get("k", 0)), "delta": cfg.delta,
               "config": cfg.to_dict(), "evaluation": ev.to_dict(), "base_match_rate": fp.meta["base_match_rate"]}
        write_json(rates_path, row)
        rows.append(row)
    return rows


def finish(out: Path, profile: dict[str, Any], accs: dict[str, Any], rows: list[dict[str, Any]], base: nn.Module,
           data_root: str | Path | None, table: str) -> dict[str, Any]:
    """Write results.json, the table (Markdown, CSV) and the report of a grid run."""
    from .._io import atomic_write_text
    from ..report.render import write_report
    from ..report.tables import grid_csv, grid_markdown

    results = {"profile": profile, "accuracy": accs, "rows": rows,
               "methods": {f"{r['label']} d={r['delta']:g}": r for r in rows}}
    write_json(out / "results.json", results)
    atomic_write_text(out / f"{table}.md", grid_markdown(results))
    atomic_write_text(out / f"{table}.csv", grid_csv(results))
    sets = {r["name"]: FingerprintSet.load(out / "fingerprints" / f"{r['name']}.safetensors") for r in rows[:8]}
    write_report(out, sets=sets, base=base, data_root=data_root)
    return results

