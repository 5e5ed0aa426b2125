"""Where a generation step's time goes: one noise sample's pieces, per dtype, for cnn1 at a given width.

Prints, in ms per sample for a batch of 100: forward, forward + input-gradient backward with and without
BatchNorm folding, the weight-noise draw into a fresh vs a reused buffer, and sample + fold as charex does it.

    python benchmarks/profile_pass.py --width 0.25
    python benchmarks/profile_pass.py --width 1.0 --reps 3
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from charex.make.gradients import ModelForward
from charex.models import NORMALIZATIONS, Normalized, build_arch


def ms(f, reps: int) -> float:
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    torch.manual_seed(0)
    m = Normalized(build_arch("cnn1", width=a.width), *NORMALIZATIONS["cifar10"]).eval()
    x, y = torch.rand(a.n, 3, 32, 32), torch.randint(10, (a.n,))
    print(f"cnn1 width {a.width}, batch {a.n}, {torch.get_num_threads()} threads; ms per noise sample")
    for name, dt, cl in (("float32", torch.float32, False), ("bfloat16 + channels-last", torch.bfloat16, True)):
        row = {}
        for fold in (False, True):
            fw = ModelForward(m, dtype=dt, channels_last=cl, delta=0.01, generator=torch.Generator().manual_seed(0),
                              fold_bn=fold)
            params = fw.sample_params()

            def fb() -> None:
                xg = x.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(fw.logits(xg, params), y, reduction="sum"), xg)

            def fwd() -> None:
                with torch.no_grad():
                    fw.logits(x, params)

            row[f"forward{' (BN folded)' if fold else ''}"] = ms(fwd, a.reps)
            row[f"forward+backward{' (BN folded)' if fold else ''}"] = ms(fb, a.reps)
        row["noise draw, fresh buffer"] = ms(lambda: torch.empty(fw.numel).uniform_(-0.01, 0.01, generator=fw.generator),
                                             a.reps)
        row["noise + perturbed weights (reused buffers)"] = ms(fw.sample_params, a.reps)
        row["... + BN folding (reused buffers)"] = ms(lambda: fw._fold(fw.sample_params(), reuse=True), a.reps)
        print(f"\n{name}:")
        for k, v in row.items():
            print(f"  {k:45} {v:8.1f}")


if __name__ == "__main__":
    main()
