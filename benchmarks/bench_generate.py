"""Benchmark RC+GM generation: paper-faithful loop, torchattacks EOTPGD, charex fp32 / bf16, FLOP floor.

Every variant does the same work: n examples, q weight-noise samples per step, a fixed
number of steps, extrapolated to 500. Each variant runs in its own subprocess so its peak
resident memory is its own. Prints one table of times and ratios measured in this run.

    python benchmarks/bench_generate.py                      # cnn1 width 0.25, n=100, q=10
    python benchmarks/bench_generate.py --width 1.0 --steps 2
    python benchmarks/bench_generate.py --json out.json      # also write the numbers

torchattacks is optional: `pip install --no-deps torchattacks` (its requirements pull a CUDA torch).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

VARIANTS = ["paper-loop-fp32", "torchattacks-eotpgd-fp32", "charex-fp32", "charex-bf16"]


def build(width: float, seed: int = 0) -> torch.nn.Module:
    from charex.models import NORMALIZATIONS, Normalized, build_arch

    torch.manual_seed(seed)
    return Normalized(build_arch("cnn1", width=width), *NORMALIZATIONS["cifar10"]).eval()


def paper_loop(model, x, y, steps, q, delta, alpha):
    """q separate forward/backward passes per step, noise added to the weights in place and removed."""
    params = [p for p in model.parameters()]
    for _ in range(steps):
        grad = torch.zeros_like(x)
        for _ in range(q):
            noise = [torch.empty_like(p).uniform_(-delta, delta) for p in params]
            with torch.no_grad():
                for p, e in zip(params, noise):
                    p.add_(e)
            xg = x.clone().requires_grad_(True)
            grad += torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]
            with torch.no_grad():
                for p, e in zip(params, noise):
                    p.sub_(e)
        x = torch.clamp(x - alpha * grad.sign(), 0, 1)
    return x


class NoisyWrapper(torch.nn.Module):
    """What a torchattacks user writes: fresh uniform weight noise on every forward."""

    def __init__(self, model, delta):
        super().__init__()
        self.model, self.delta = model, delta
        self.params = {n: p.detach() for n, p in model.named_parameters()}

    def forward(self, x):
        noisy = {n: p + torch.empty_like(p).uniform_(-self.delta, self.delta) for n, p in self.params.items()}
        return torch.func.functional_call(self.model, noisy, (x,))


def run_variant(name: str, a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    model = build(a.width)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(a.n, 3, 32, 32, generator=g)
    y = torch.randint(10, (a.n,), generator=g)
    alpha = 1 / 255

    def once(steps: int):
        if name == "paper-loop-fp32":
            return paper_loop(model, x0, y, steps, a.q, a.delta, alpha)
        if name == "torchattacks-eotpgd-fp32":
            import torchattacks

            atk = torchattacks.EOTPGD(NoisyWrapper(model, a.delta), eps=1.0, alpha=alpha, steps=steps,
                                      eot_iter=a.q, random_start=False)
            atk.set_mode_targeted_by_label(quiet=True)
            return atk(x0, y)
        from charex import GenerationConfig, generate

        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        cfg = GenerationConfig(method="rcgm", n=a.n, steps=steps, alpha=alpha, delta=a.delta, q=a.q, dtype=dtype)
        return generate(model, cfg, x0=x0, targets=y, quantize=False).images

    once(1)  # warm-up (allocator, oneDNN primitive cache)
    t = time.perf_counter()
    once(a.steps)
    per_step = (time.perf_counter() - t) / a.steps
    return {"variant": name, "s_per_step": per_step, "s_per_500": per_step * 500,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def matmul_ceiling(dtype: torch.dtype, threads: int) -> float:
    """Sustained GFLOP/s of a 2048^3 matmul in ``dtype``."""
    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048).to(dtype)
    b = torch.randn(2048, 2048).to(dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):  # best of three trials of six products
        t = time.perf_counter()
        for _ in range(6):
            a @ b
        best = max(best, 2 * 2048 ** 3 * 6 / (time.perf_counter() - t) / 1e9)
    return best


def forward_flops(width: float, n: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(width)
    with FlopCounterMode(display=False) as fc:
        model(torch.rand(n, 3, 32, 32))
    return fc.get_total_flops()


def child(a: argparse.Namespace, name: str, **over) -> dict:
    args = [sys.executable, __file__, "--child", name, "--width", str(a.width), "--n", str(over.get("n", a.n)),
            "--q", str(over.get("q", a.q)), "--steps", str(a.steps), "--delta", str(a.delta), "--threads", str(a.threads)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return {"variant": name, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--q", type=int, default=10)
    p.add_argument("--steps", type=int, default=3, help="timed steps (extrapolated to 500)")
    p.add_argument("--delta", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--json", help="write all numbers here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_variant(a.child, a)))
        return
    print(f"cnn1 width {a.width}, n={a.n}, q={a.q}, {a.steps} timed steps extrapolated to 500, "
          f"{a.threads} threads, torch {torch.__version__}")
    flops = forward_flops(a.width, a.n)
    ceil = {"fp32": matmul_ceiling(torch.float32, a.threads), "bf16": matmul_ceiling(torch.bfloat16, a.threads)}
    floor = {k: flops * 2 * a.q * 500 / (v * 1e9) for k, v in ceil.items()}
    print(f"forward: {flops / 1e9:.2f} GFLOP per {a.n} images; matmul ceiling fp32 {ceil['fp32']:.0f}, "
          f"bf16 {ceil['bf16']:.0f} GFLOP/s; FLOP floor per 500 steps: fp32 {floor['fp32']:.0f} s, bf16 {floor['bf16']:.0f} s")
    rows = [child(a, v) for v in a.variants]
    ref = next((r for r in rows if r.get("variant") == "torchattacks-eotpgd-fp32" and "error" not in r), None)
    print(f"\n{'variant':28} {'s/500 steps':>12} {'vs torchattacks':>16} {'x of floor':>11} {'peak RSS MB':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:28} skipped: {r['error']}")
            continue
        fl = floor["bf16" if r["variant"].endswith("bf16") else "fp32"]
        speed = f"{ref['s_per_500'] / r['s_per_500']:.2f}x" if ref else "-"
        print(f"{r['variant']:28} {r['s_per_500']:12.1f} {speed:>16} {r['s_per_500'] / fl:11.2f} {r['peak_rss_mb']:12.0f}")
    scaling = []
    if not a.no_scaling:
        default = "charex-bf16"
        print(f"\nscaling of {default} (s per step): ", end="")
        for n, q in ((a.n // 4, a.q), (a.n // 2, a.q), (a.n, a.q // 2), (a.n, 1)):
            r = child(a, default, n=max(1, n), q=max(1, q))
            scaling.append({"n": max(1, n), "q": max(1, q), **r})
            print(f"n={max(1, n)} q={max(1, q)}: {r.get('s_per_step', float('nan')):.3f}  ", end="")
        print()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "forward_flops": flops, "ceiling_gflops": ceil, "floor_s": floor,
                       "rows": rows, "scaling": scaling}, f, indent=2)


if __name__ == "__main__":
    main()
