"""Inference speed of charex's own architectures with contiguous vs channels-last input (what ``predict`` uses for
labelling panels, calibration and suspects), measured in one run on this CPU.

    python benchmarks/bench_inference.py [--images 4096] [--batch 256]

Prints, per bundled architecture, seconds per pass over the images in each layout, their ratio and whether the
labels agree.
"""

from __future__ import annotations

import argparse
import time

import torch

from charex import load_model


def seconds(model: torch.nn.Module, x: torch.Tensor, batch: int, channels_last: bool) -> tuple[float, torch.Tensor]:
    out = []
    with torch.no_grad():
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            out.append(model(xb.contiguous(memory_format=torch.channels_last) if channels_last else xb).argmax(1))
        return time.perf_counter() - t, torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    from charex.dtypes import cpu_info

    name, flags = cpu_info()
    isa = "AMX" if "amx_bf16" in flags else "AVX-512-BF16" if "avx512_bf16" in flags else \
        "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    print(f"CPU: {name} ({isa}); torch threads {torch.get_num_threads()}; float32; {args.images} images, "
          f"batch {args.batch}")
    x = torch.rand(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print("| model | contiguous s | channels-last s | speed-up | labels agree |\n|---|---|---|---|---|")
    for name in ("base", "other-arch", "independent-plain", "independent-wide", "independent-resnet8"):
        m = load_model(f"bundled:{name}").eval()
        seconds(m, x[: args.batch], args.batch, True)  # warm-up
        a, la = min((seconds(m, x, args.batch, False) for _ in range(2)), key=lambda r: r[0])
        b, lb = min((seconds(m, x, args.batch, True) for _ in range(2)), key=lambda r: r[0])
        print(f"| {name} ({m.card.get('arch')}) | {a:.2f} | {b:.2f} | {a / b:.2f}x | "
              f"{100 * float((la == lb).float().mean()):.2f}% |")


if __name__ == "__main__":
    main()
