"""The house (issue 40): no import circle in charex, and a new statistic is one class behind the protocol plus one
registry line: the kit builds it, every route judges it, its words, cell and description are its own."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from scipy import stats

from charex import GenerationConfig, generate
from charex.judge import registry
from charex.judge.kit import Kit, open_kit
from charex.judge.protocol import Answers, QueryTest, TestResult, shuffled
from charex.judge.query import LocalSuspect, judge, judge_answers

SRC = Path(__file__).resolve().parents[2] / "src" / "charex"


def _imports() -> dict[str, set[str]]:
    """Every charex module -> the charex modules it imports, at the top or inside a function."""
    mods = {str(p.relative_to(SRC.parent).with_suffix("")).replace("/", ".").removesuffix(".__init__"): p
            for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                for a in node.names:
                    target = f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod
                    if target in mods and target != m:
                        out[m].add(target)
            elif isinstance(node, ast.Import):
                out[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return out


def test_no_import_circle() -> None:
    """No module reaches itself through imports, deferred ones included (a deferred import may defer a cost, never
    hide a circle)."""
    graph = _imports()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if (SRC.parent / n.replace(".", "/") / "__init__.py").is_file() and n != "charex":
                continue  # a subpackage's __init__ re-exports its modules: not a module's own dependency
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


# a new statistic, as a user of the protocol would add it: a binomial count against a rate its calibration stores
class AgreementTest(QueryTest):
    """Do more queries get their target than the calibrated rate gives? (one-sided exact binomial)"""

    kind = name = "agreement"
    column = "agreement"

    def __init__(self, fp: Any) -> None:
        self.fp = fp

    def calibrate(self, models: Any, level: float = 0.01) -> "AgreementTest":
        rate = sum(float((m(self.fp.pixels()).argmax(1) == self.fp.targets).float().mean()) for m in models) / len(models)
        return AgreementTest(self.fp.with_calibration({"null": self.kind, "rate": min(max(rate, 0.05), 0.95),
                                                       "level": level, "references": []}))

    def order(self, seed: int) -> list[int]:
        return shuffled(self.fp.n, seed)

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        k = sum(int(self.fp.targets[i]) == lab for i, lab in answers.items())
        cal = self.fp.calibration
        p = None if cal is None else float(stats.binom.sf(k - 1, len(answers), cal["rate"]))
        return TestResult(self.name, float(k), p, len(answers), {"agree": k, "answered": len(answers)})

    def settled(self, answers: Answers, level: float) -> bool | None:
        return None

    def finding(self, r: dict[str, Any]) -> str:
        return f"agreement: {r['agree']} of {r['answered']} answered with their target"

    @classmethod
    def cell(cls, r: dict[str, Any] | None) -> str:
        return "-" if r is None or r.get("statistic") is None else str(r["agree"])

    def describe(self) -> list[str]:
        return [f"  agreement  {self.n} queries"]

    def audit(self, inputs: Any) -> Any:
        raise NotImplementedError


@pytest.fixture
def registered(monkeypatch):
    """The one registry line, as the new test's own module would add it."""
    monkeypatch.setattr(registry, "KINDS", (AgreementTest, *registry.KINDS))


def test_a_new_statistic_is_one_class_and_one_registry_line(registered, trained_tiny, tmp_path) -> None:
    from charex.report.tables import kit_markdown
    from conftest import make_tiny

    fp = generate(trained_tiny, GenerationConfig(n=20, steps=10, alpha=2 / 255, dtype="float32"), progress=False)
    fp.meta["agreement"] = {}
    made = AgreementTest(fp).calibrate([make_tiny(50 + i, train_steps=30) for i in range(2)], 0.05)
    kit = Kit(tests=(made.fp,), level=0.05)
    assert isinstance(kit.tests[0], AgreementTest) and kit.names == ["agreement"]
    v = judge(kit, LocalSuspect(trained_tiny), "base")
    assert v.decision == "derived" and v.fired == "agreement" and v.queries == 20
    assert v.lines() == [f"base: 20 of 20 answered with their target, p = {v.p_value:.3g}: DERIVED"]
    same = judge_answers(kit, {i: int(t) for i, t in enumerate(fp.targets)}, "answers")
    assert same.p_value == pytest.approx(v.p_value)
    kit.save(tmp_path / "kit.safetensors")
    back = open_kit(tmp_path / "kit.safetensors")
    assert isinstance(back.tests[0], AgreementTest) and back.digest == kit.digest
    table = kit_markdown({"tests": kit.names, "queries": kit.n, "make_seconds": 0, "level": kit.level, "missing": [],
                          "verdicts": [{**v.to_dict(), "kind": "derived", "accuracy": None}]})
    assert "| agreement |" in table and "| 20 |" in table
    assert json.loads(json.dumps(v.to_dict()))["tests"][0]["agree"] == 20
    assert torch.equal(back.images, kit.images)
