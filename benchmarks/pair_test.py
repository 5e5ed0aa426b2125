"""Issue 32, first measurement: a label-only statistic that does not depend on the suspect's label set.

    python benchmarks/pair_test.py --json docs/data/pair-test.json      # ~15 min on 2 cores (reuses cached in runs/pairs)
    python benchmarks/pair_test.py --table docs/data/pair-test.json     # docs/results.md's table

Queries: pairs of the owner's images (CIFAR-10's test set; the thieves train on half-b of the training set) with
different owner labels that one model's penultimate features map alike and the other models' do not: for model M among
the base and its twins (independent-1, -2: the kit's twins), score(i, j) = cos_M(i, j) - max over the others of
cos_other(i, j), over each image's 10 nearest neighbours under M; each section takes its top pairs greedily, no image
in two pairs. Sections: the base's (250 pairs) and each twin's (125): 1,000 images in all.
Statistic: d = (share of the base's pairs the suspect labels alike) - (mean share over the twins' sections), in the
suspect's own labels, whatever they are; a two-class suspect's high chance agreement cancels in the difference.
Null: the same d of the calibration reuses (independent-3's backbone reused the same ways), Student-t prediction with
the suspect's own binomial error added (as the mistake test's). Rules fixed before any suspect was scored.
Suspects: the base's backbone reused (coarse, subset: linear probe and fine-tune, seed 0), two fresh seeds of the
recipe (benchmarks/weight_test.py's runs/wpool) reused the same ways (hard negatives), and the same-task models.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import load_pool_model, machine, write_result  # noqa: E402

from charex.data import load_cifar10  # noqa: E402
from charex.data.cifar10 import thief_split  # noqa: E402
from charex.derive import TASKS, relabel, reuse_backbone  # noqa: E402
from charex.derive.reuse import _last_linear  # noqa: E402
from charex.judge.verify import batch_logits  # noqa: E402
from charex.models import load_model, save_model  # noqa: E402
from charex.train import accuracy  # noqa: E402

TWINS = ("independent-1", "independent-2")
WAYS = (("coarse", "linear probe", True), ("coarse", "fine-tune", False), ("subset", "linear probe", True),
        ("subset", "fine-tune", False))


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's head (its penultimate features), unit norm, N x D."""
    _, _, head = _last_linear(model)
    got = []
    h = head.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().float()))
    try:
        batch_logits(model, x)
    finally:
        h.remove()
    f = torch.cat(got)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def make_pairs(feats: list[torch.Tensor], labels: torch.Tensor, sizes: list[int], k: int = 10) -> list[torch.Tensor]:
    """Section m's pairs (sizes[m] x 2 image indices): model m maps them alike, the others not (module docs)."""
    used = torch.zeros(len(labels), dtype=torch.bool)
    out = []
    for m, size in enumerate(sizes):
        f = feats[m]
        cands = []
        for s in range(0, len(f), 2000):
            sim = f[s:s + 2000] @ f.T
            sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -2
            val, nb = sim.topk(k, dim=1)
            i = torch.arange(s, s + sim.shape[0])[:, None].expand_as(nb)
            cands.append(torch.stack([i.flatten(), nb.flatten(), val.flatten()], 1))
        c = torch.cat(cands)
        i, j = c[:, 0].long(), c[:, 1].long()
        other = torch.stack([(feats[o][i] * feats[o][j]).sum(1) for o in range(len(feats)) if o != m]).amax(0)
        score = c[:, 2] - other
        score[labels[i] == labels[j]] = -9
        pairs = []
        for q in score.argsort(descending=True).tolist():
            a, b = int(i[q]), int(j[q])
            if score[q] < -1 or len(pairs) == size:
                break
            if used[a] or used[b]:
                continue
            used[a] = used[b] = True
            pairs.append((a, b))
        out.append(torch.tensor(pairs))
    return out


def agreement(pred: torch.Tensor, pairs: list[torch.Tensor]) -> list[float]:
    return [float((pred[p[:, 0]] == pred[p[:, 1]]).float().mean()) for p in pairs]


def d_and_se(rates: list[float], sizes: list[int]) -> tuple[float, float]:
    d = rates[0] - sum(rates[1:]) / (len(rates) - 1)
    var = rates[0] * (1 - rates[0]) / sizes[0] + sum(r * (1 - r) / n for r, n in zip(rates[1:], sizes[1:])) / \
        (len(rates) - 1) ** 2
    return d, math.sqrt(var)


def table(path: str) -> str:
    """docs/results.md's table from a result file."""
    import json

    res = json.loads(Path(path).read_text())
    lines = ["| backbone | task | how | role | task accuracy | alike: base's pairs / twins' | d | p at 1,000 / 500 / "
             "200 / 100 queries |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        acc = "-" if r["task_accuracy"] is None else f"{100 * r['task_accuracy']:.1f}%"
        at = " / ".join(f"{r['p_at'][str(b)]:.2g}" for b in (1000, 500, 200, 100))
        lines.append(f"| {r['backbone']} | {r['task']} | {r['how']} | {r['role']} | {acc} | "
                     f"{r['rates'][0]:.3f} / {', '.join(f'{x:.3f}' for x in r['rates'][1:])} | {r['d']:+.3f} | {at} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", metavar="JSON", help="print docs/results.md's table from a result file and stop")
    ap.add_argument("--json")
    ap.add_argument("--pool", default="runs/wpool")
    ap.add_argument("--cache", default="runs/pairs")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.json:
        ap.error("--json is needed (or --table JSON)")
    print(machine())
    from scipy import stats

    test = load_cifar10(args.data, "test")
    x = test.images.float() / 255
    base = load_pool_model("base")
    owners = [base] + [load_pool_model(t) for t in TWINS]
    sizes = [250, 125, 125]
    pairs = make_pairs([features(m, x) for m in owners], test.labels, sizes)
    print("pairs per section", [len(p) for p in pairs])
    train, _ = thief_split(load_cifar10(args.data, "train"), "half-b")
    tasks = {t: (relabel(train, m), relabel(test, m), max(m.values()) + 1) for t, m in TASKS.items()}
    backbones = {"base": base, "independent-3": load_pool_model("independent-3"),
                 **{p.stem: load_pool_model(p.stem, args.pool) for p in sorted(Path(args.pool).glob("recipe-s*.safetensors"))}}
    rows, preds = [], []
    for owner, model in backbones.items():
        for task, how, probe in WAYS:
            path = Path(args.cache) / f"{owner}-{task}-{how.replace(' ', '_')}.safetensors"
            tr, te, classes = tasks[task]
            if path.exists():
                m = load_model(str(path))
            else:
                m = reuse_backbone(model, tr, classes, probe=probe, seed=0)
                save_model(m, path)
            pred = batch_logits(m, x).argmax(1)
            preds.append(pred)
            rates = agreement(pred, pairs)
            d, se = d_and_se(rates, [len(p) for p in pairs])
            rows.append({"backbone": owner, "task": task, "how": how, "task_accuracy": accuracy(m, te),
                         "rates": rates, "d": d, "se": se,
                         "role": "derived" if owner == "base" else "calibration" if owner == "independent-3"
                         else "hard negative"})
            print(f"{owner:>14} {task:>6} {how:<13} acc {100 * rows[-1]['task_accuracy']:.1f}%  rates "
                  f"{[round(r, 3) for r in rates]}  d {d:+.3f} (se {se:.3f})", flush=True)
    for name in ("base", "independent-4", "derived-student"):  # same-task models, for reference
        pred = batch_logits(load_pool_model(name), x).argmax(1)
        preds.append(pred)
        rates = agreement(pred, pairs)
        d, se = d_and_se(rates, [len(p) for p in pairs])
        rows.append({"backbone": name, "task": "cifar10", "how": "as is", "task_accuracy": None, "rates": rates,
                     "d": d, "se": se, "role": "same task"})
        print(f"{name:>14} cifar10 as is  rates {[round(r, 3) for r in rates]}  d {d:+.3f} (se {se:.3f})")
    budgets = {}
    for budget in (1000, 500, 200, 100):  # the top-ranked pairs of each section, in the same 2:1:1 split
        n = [max(1, round(budget / 4)), max(1, round(budget / 8)), max(1, budget // 2 - round(budget / 4) -
                                                                     max(1, round(budget / 8)))]
        cut = [p[:k] for p, k in zip(pairs, n)]
        scored = [d_and_se(agreement(pr, cut), n) for pr in preds]
        cal = [d for (d, _), r in zip(scored, rows) if r["role"] == "calibration"]
        mu = sum(cal) / len(cal)
        sd = (sum((c - mu) ** 2 for c in cal) / (len(cal) - 1)) ** 0.5
        ps = [float(stats.t.sf((d - mu) / math.sqrt(sd ** 2 * (1 + 1 / len(cal)) + se ** 2), df=len(cal) - 1))
              for d, se in scored]
        budgets[budget] = {"sections": n, "null": {"mean": mu, "sd": sd}, "p_values": ps,
                           "d": [d for d, _ in scored]}
        for r, p in zip(rows, ps):
            r.setdefault("p_at", {})[budget] = p
    for r in rows:
        r["p_value"] = r["p_at"][1000]
        at = " / ".join(f"{r['p_at'][b]:.3g}" for b in (1000, 500, 200, 100))
        print(f"{r['backbone']:>14} {r['task']:>7} {r['how']:<13} {r['role']:<13} d {r['d']:+.3f}  p at 1000 / 500 / "
              f"200 / 100: {at}")
    write_result(args.json, {"machine": machine(), "pairs": [p.tolist() for p in pairs], "sizes": sizes,
                             "budgets": budgets, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
