"""What an ImageNet-size fingerprint costs: the default generation at 224 x 224 against the FLOP floor.

For each model (random weights; the cost does not depend on them): a ResNet-50 (torchvision layout), a ViT-B/16
(Hugging Face transformers, when installed) and the paper's VGG-16, with R references of the same shape, the
default configuration (vanilla, n = 100, alpha 0.5/255, reference-contrastive) runs through the real
``charex.make.generate`` loop for 1 and 1 + S steps; the difference is the cost of S steps, without the fixed
costs (probing, the final pass). In the same run it measures

* the FLOPs of one step (``torch.utils.flop_counter``, counted on 2 examples and scaled to n), and
* the matmul ceiling in the generation dtype (best of three 2048^3 products),

so ``x floor`` = measured step time / (step FLOPs / ceiling) is a ratio measured in one run. It projects the
default (100 steps) and the paper's ImageNet setting (VGG-16, 100 examples, 500 steps, RC+GM with q = 10: ten
forward/backward passes per step, no references) from the measured per-pass cost.

    python benchmarks/imagenet_cost.py                           # resnet50, vit-b16, vgg16; R = 2; S = 2
    python benchmarks/imagenet_cost.py --models resnet50 --n 20  # quicker
    python benchmarks/imagenet_cost.py --json docs/data/imagenet-cost.json

On a GPU (``--device cuda``) the same script times the same loop there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(name: str, seed: int, device: str) -> torch.nn.Module:
    """A random-weight 1000-class model on [0, 1] pixels with ImageNet normalization."""
    from charex.models import NORMALIZATIONS, Normalized, build_arch

    torch.manual_seed(seed)
    if name == "resnet50":
        net = build_arch("resnet50")
    elif name == "vgg16":
        net = build_arch("vgg16")
    elif name == "vit-b16":  # transformers' ViTConfig() is ViT-B/16 at 224
        net = build_arch("hf", config={"model_type": "vit", "num_labels": 1000})
    elif name == "vit-b16-native":  # charex's own ViT at ViT-B/16 sizes (mean pooling instead of a class token)
        net = build_arch("vit", dim=768, depth=12, heads=12, mlp_ratio=4.0, patch=16, image_size=224, num_classes=1000)
    else:
        raise SystemExit(f"unknown model {name!r}")
    card = {"input_shape": [3, 224, 224], "num_classes": 1000}
    return Normalized(net, *NORMALIZATIONS["imagenet"], card).eval().to(device)


def matmul_ceiling(dtype: torch.dtype, device: str) -> float:
    """Sustained GFLOP/s of a 2048^3 matmul in ``dtype`` (best of three trials of six products)."""
    a = torch.randn(2048, 2048, device=device).to(dtype)
    b = torch.randn(2048, 2048, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(6):
            a @ b
        sync(device)
        best = max(best, 2 * 2048 ** 3 * 6 / (time.perf_counter() - t) / 1e9)
    return best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_generate(base, refs, n: int, steps: int, dtype: str) -> float:
    from charex import GenerationConfig, generate

    sync(str(next(base.parameters()).device))
    t = time.perf_counter()
    generate(base, GenerationConfig(n=n, steps=steps, dtype=dtype, early_stop=False), references=refs or None,
             quantize=False)
    sync(str(next(base.parameters()).device))
    return time.perf_counter() - t


def step_flops(base, refs, dtype: str, n_count: int = 2) -> float:
    """FLOPs of one generation step at n = ``n_count`` (two runs: 2 steps minus 1 step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from charex import GenerationConfig, generate

    def count(steps: int) -> int:
        with FlopCounterMode(display=False) as fc:
            generate(base, GenerationConfig(n=n_count, steps=steps, dtype=dtype, early_stop=False),
                     references=refs or None, quantize=False)
        return fc.get_total_flops()

    return float(count(2) - count(1))


def measure(name: str, a: argparse.Namespace, dtype: str, ceiling: float) -> dict:
    base = build(name, 0, a.device)
    refs = [build(name, 1 + r, a.device) for r in range(a.references)]
    run_generate(base, refs, min(a.n, 4), 1, dtype)  # warm-up: allocator, oneDNN primitives
    t1 = run_generate(base, refs, a.n, 1, dtype)
    t2 = run_generate(base, refs, a.n, 1 + a.steps, dtype)
    per_step = (t2 - t1) / a.steps
    flops = step_flops(base, refs, dtype) * a.n / 2
    floor = flops / (ceiling * 1e9)
    passes = 1 + a.references  # forward + input-gradient passes per step
    per_pass = per_step / passes
    return {"model": name, "params_millions": round(sum(p.numel() for p in base.parameters()) / 1e6, 2),
            "n": a.n, "references": a.references, "s_per_step": per_step, "fixed_s": t1 - per_step,
            "step_tflop": flops / 1e12, "floor_s_per_step": floor, "x_floor": per_step / floor,
            "s_per_pass": per_pass, "default_100_steps_min": (per_step * 100 + t1 - per_step) / 60,
            "default_R5_100_steps_min": per_pass * 6 * 100 / 60}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", nargs="+", default=["resnet50", "vit-b16", "vgg16"],
                   help="resnet50, vit-b16 (needs transformers), vit-b16-native, vgg16")
    p.add_argument("--n", type=int, default=100, help="examples (default 100)")
    p.add_argument("--references", type=int, default=2, help="references of the same shape (default 2)")
    p.add_argument("--steps", type=int, default=2, help="timed steps beyond the first (default 2)")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 where native), float32 or bfloat16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--json", help="also write the numbers here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from charex.dtypes import resolve_dtype

    dtype = resolve_dtype(a.dtype, torch.device(a.device))
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    ceiling = matmul_ceiling(tdtype, a.device)
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else cpu_name()
    print(f"device: {dev}; {torch.get_num_threads()} threads; torch {torch.__version__}; dtype {dtype}; "
          f"matmul ceiling {ceiling:.0f} GFLOP/s")
    print(f"default generation, n = {a.n}, {a.references} references, {a.steps} timed steps\n")
    rows = []
    for name in a.models:
        try:
            r = measure(name, a, dtype, ceiling)
        except Exception as e:  # a model that cannot be built here (transformers missing) is reported, not fatal
            print(f"{name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        rows.append(r)
        print(f"{name:15} {r['params_millions']:7.1f} M params  {r['s_per_step']:8.2f} s/step  "
              f"floor {r['floor_s_per_step']:7.2f} s  x floor {r['x_floor']:5.2f}  "
              f"default (100 steps) {r['default_100_steps_min']:6.1f} min, with 5 refs {r['default_R5_100_steps_min']:6.1f} min")
    vgg = next((r for r in rows if r["model"] == "vgg16"), None)
    proj = None
    if vgg is not None:  # the paper's setting: n = 100, 500 steps x q = 10 passes of VGG-16, no references
        pass100 = vgg["s_per_pass"] * 100 / a.n  # a pass costs in proportion to the examples in it
        proj = {"paper_rcgm_ltrc_vgg16_hours": pass100 * 10 * 500 / 3600,
                "paper_vanilla_vgg16_hours": pass100 * 500 / 3600,
                "charex_default_5refs_vgg16_hours": pass100 * 6 * 100 / 3600}
        print(f"\nprojection to the paper's ImageNet setting on this device (VGG-16, n = 100, 500 steps; measured "
              f"at n = {a.n}): RC+GM/LTRC (q = 10) {proj['paper_rcgm_ltrc_vgg16_hours']:.1f} h, vanilla "
              f"{proj['paper_vanilla_vgg16_hours']:.2f} h; charex's default (100 steps, 5 references) "
              f"{proj['charex_default_5refs_vgg16_hours']:.2f} h")
    if a.json:
        from charex._io import atomic_write_text

        atomic_write_text(a.json, json.dumps({"device": dev, "threads": torch.get_num_threads(),
                                               "torch": torch.__version__, "dtype": dtype,
                                               "ceiling_gflops": ceiling, "args": vars(a), "rows": rows,
                                               "projection": proj, "command": " ".join(sys.argv)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
