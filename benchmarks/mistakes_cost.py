"""The owner's cost of a mistake fingerprint (charex.make.mistakes) against the issue's budget of 30 minutes on 2 cores.

    python benchmarks/mistakes_cost.py --train-twin --json docs/data/mistakes-cost.json

Times, in one run, ``mistake_queries`` on the owner's images (half-a of the training set and the test split, as in
benchmarks/mistakes.py) with the base, its three twins and the four other generation references, and one suspect's
scoring; the twins' training time is read from their cards (``train_seconds``, measured when they were trained on
this project's machines, some with other jobs on the cores); ``--train-twin`` also trains one twin in this run,
alone on the cores, and times it. Prints the CPU and every part as a fraction of the 30-minute budget.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from charex import load_model
    from charex.data import load_cifar10
    from charex.data.cifar10 import thief_split
    from charex.experiments.provenance import cpu_description, write_json
    from charex.make.mistakes import mistake_queries
    from charex.judge.mistakes import score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--twins", nargs="+", default=["bundled:independent-1", "runs/pool/cnn1-s9-twin.safetensors",
                                                  "runs/pool/cnn1-s10-twin.safetensors"])
    p.add_argument("--references", nargs="+", default=["bundled:other-arch", "runs/pool/cnn1-s8.safetensors",
                                                       "bundled:reference-plain", "bundled:reference-wide"])
    p.add_argument("--suspect", default="bundled:independent-resnet8")
    p.add_argument("--train-twin", action="store_true",
                   help="also train one twin (the base's recipe, seed 11) in this run and time it")
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}; torch threads {torch.get_num_threads()}", flush=True)
    base = load_model("bundled:base")
    twins = [load_model(s) for s in a.twins]
    refs = [load_model(s) for s in a.references]
    train, test = load_cifar10(None, "train"), load_cifar10(None, "test")
    half_a, _ = thief_split(train, "half-a")
    images, labels = torch.cat([half_a.images, test.images]), torch.cat([half_a.labels, test.labels])
    t0 = time.perf_counter()
    fp = mistake_queries(base, twins, images, labels, references=refs, max_agree=3)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    score(fp, load_model(a.suspect), a.suspect)
    score_s = time.perf_counter() - t0
    train_s = [float(t.card.get("train_seconds") or 0) for t in twins]
    budget = 30 * 60
    measured = None
    if a.train_twin:  # one twin trained here, alone on the cores, timed with the same clock as the rest
        from charex.train import TrainConfig, train_from_scratch

        cfg = TrainConfig(epochs=int(base.card["epochs"]), seed=11, dtype=base.card["train"].get("dtype", "auto"))
        t0 = time.perf_counter()
        train_from_scratch(base.card["arch"], base.card["arch_kwargs"], 11, train, None, cfg, progress=False)
        measured = time.perf_counter() - t0
        print(f"one twin trained in this run: {measured:.0f} s; three such twins and the labelling: "
              f"{(3 * measured + make_s) / 60:.1f} min = {(3 * measured + make_s) / budget:.2f} of the budget")
    total = sum(train_s) + make_s
    print(f"twins' training (cards): {', '.join(f'{s:.0f} s' for s in train_s)} = "
          f"{sum(train_s) / budget:.2f} of 30 min")
    print(f"mistake_queries on {len(images)} images ({fp.n} queries kept): {make_s:.0f} s = {make_s / budget:.3f}")
    print(f"one suspect scored on the {fp.n} queries: {score_s:.1f} s")
    print(f"owner's total: {total / 60:.1f} min = {total / budget:.2f} of the budget "
          f"({'within' if total <= budget else 'over'})")
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "twins": a.twins, "twin_train_seconds": train_s,
                            "make_seconds": make_s, "score_seconds": score_s, "queries": fp.n,
                            "images": len(images), "total_seconds": total, "budget_seconds": budget,
                            "twin_trained_here_seconds": measured})


if __name__ == "__main__":
    main()
