"""Fingerprint commands: generate, calibrate, verify, inspect, export."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CharexError
from .common import (EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_UNCALIBRATED, Add, add_model_args, load,
                     print_json, shape_arg)

EXAMPLES = {
    "generate": "charex generate bundled:base --references bundled:independent-1 bundled:other-arch -o fp.safetensors"
                "\n  charex generate bundled:base --preset stealth --references bundled:independent-1 "
                "bundled:other-arch -o fp-stealth.safetensors   # survives JPEG 75; not hidden"
                "\n  charex generate bundled:base --preset paper -o fp-paper.safetensors   # the paper's LTRC"
                "\n  charex generate model.safetensors --arch cnn1 --arch-kw width=0.25 "
                "--normalization cifar10 --method vanilla -o fp.safetensors",
    "calibrate": "charex calibrate fp.safetensors --reference bundled:independent-2 bundled:independent-3 "
                 "-o fp-cal.safetensors",
    "verify": "charex verify kit.safetensors suspect1.safetensors suspect2.pt2 --json\n"
              "  charex verify kit.safetensors http://HOST:8080/v2/models/NAME --max-queries 500 --audit a.jsonl\n"
              "  charex verify kit.safetensors --answers api-answers.csv   # labels from a system you cannot open",
    "inspect": "charex inspect kit.safetensors   # or a single fingerprint file",
    "export": "charex export kit.safetensors queries/   # send queries/*.png to the API; keep labels.csv to yourself",
}


def _baseline(args: argparse.Namespace) -> int:
    from ..baselines import BASELINES
    from ..data import load_cifar10

    real = load_cifar10(args.data, "test")
    fp = BASELINES[args.baseline](load(args, args.model), real.images, real.labels, n=args.n or 100, seed=args.seed)
    fp.save(args.output)
    b = fp.meta["baseline"]
    summary = {"output": str(args.output), "n": fp.n, "baseline": b["name"], "params": b["params"], "digest": fp.digest}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {fp.n} {b['name']} examples (baseline; labels are the base model's; {b['source']}) to "
              f"{args.output}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..make.generate import generate
    from ..types import PRESETS, GenerationConfig

    if args.baseline:
        return _baseline(args)

    preset = dict(PRESETS[args.preset])
    start = args.start or preset.get("start", "noise")  # where the examples begin is not a GenerationConfig field
    preset.pop("start", None)
    given = {k: getattr(args, k) for k in ("method", "n", "steps", "alpha", "delta", "q", "k", "ref_weight",
                                           "surrogate_weight", "eot")
             if getattr(args, k) is not None}
    cfg = GenerationConfig(**{**preset, **given, "eta": args.eta, "seed": args.seed, "dtype": args.dtype,
                              "noise_scope": args.noise_scope, "early_stop": args.early_stop})
    model = load(args, args.model)
    refs = {spec: load(args, spec) for spec in args.references or []}
    surs = {spec: load(args, spec) for spec in args.surrogates or []}
    if not refs and not args.json:
        print("note: no --references given: fingerprints made without independent reference models transfer "
              "more to independent models (docs/research-record.md)", file=sys.stderr)
    x0 = None
    if start == "natural":  # the owner's own real images (a trained detector still spots them: research-record.md)
        from ..data.starts import start_images

        shape = args.input_shape or model.card.get("input_shape") or (3, 32, 32)
        x0 = start_images(args.data, shape, cfg.n, cfg.seed)
    if args.select_from is not None:  # CAE: more candidates, the most conferrable kept (docs/method.md)
        from ..make.select import generate_conferrable

        if args.select_from < cfg.n or not args.selection_references or not args.selection_surrogates:
            raise CharexError("--select-from N needs N >= --n and both --selection-references and "
                              "--selection-surrogates (models not used in generation)")
        if x0 is not None:
            raise CharexError("--select-from works with noise starts only")
        fp = generate_conferrable(model, cfg, args.select_from, references=refs, surrogates=surs,
                                  selection_references={m: load(args, m) for m in args.selection_references},
                                  selection_surrogates={m: load(args, m) for m in args.selection_surrogates},
                                  input_shape=args.input_shape, progress=not args.quiet)
    else:
        fp = generate(model, cfg, x0=x0, input_shape=args.input_shape, references=refs, surrogates=surs,
                      progress=not args.quiet)
    if x0 is not None:
        fp.meta["start"] = "natural"
    fp.save(args.output)
    if fp.meta["base_match_rate"] < 1.0 and not args.json:
        print(f"warning: the base model assigns only {100 * fp.meta['base_match_rate']:.1f}% of the saved examples to "
              "their targets (some target classes may be unreachable for it); more --steps or a larger --alpha help",
              file=sys.stderr)
    summary = {"output": str(args.output), "n": fp.n, "method": fp.config.method,
               "base_match_rate": fp.meta["base_match_rate"], "eta_optimal_rate": fp.meta["eta_optimal_rate"],
               "polished": fp.meta["polished"], "digest": fp.digest}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {fp.n} {fp.config.method} examples to {args.output}: base match "
              f"{100 * fp.meta['base_match_rate']:.1f}%, eta-optimal {100 * fp.meta['eta_optimal_rate']:.1f}%, "
              f"{fp.meta['polished']} polished after 8-bit rounding")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..fingerprint import FingerprintSet, read_file
    from ..judge.registry import test_for
    from ..judge.verify import calibrate

    fp = FingerprintSet.from_bytes(read_file(args.fingerprint, "fingerprint"), str(args.fingerprint))
    test_for(fp)  # its test checks the calibration block it holds (a forged one is refused, not replaced)
    refs = {spec: load(args, spec) for spec in args.reference}
    cal = calibrate(fp, refs, level=args.level, spread=(args.spread_min, args.spread_max))
    cal.save(args.output)
    c = cal.calibration or {}
    if args.json:
        print_json({"output": str(args.output), **c})
    else:
        rates = ", ".join(f"{r['matches']}/{r['n']}" for r in c["references"])
        print(f"calibrated on {len(refs)} reference models (matches {rates}): null mean {100 * c['mu']:.1f}%; "
              f"'derived' at >= {c['threshold_matches']}/{fp.n} matches "
              f"(level {c['level']}); wrote {args.output}")
    if c.get("strength") in ("weak", "impossible"):
        print(f"warning: {c['strength']} calibration: {c['advice']}", file=sys.stderr)
    elif c.get("advice") and not args.json:
        print(f"note: {c['advice']}", file=sys.stderr)
    return 0


def _remote(args: argparse.Namespace, kit: Any, url: str) -> Any:
    from ..judge.query import judge_remote
    from ..models.remote import RemoteModel

    remote = RemoteModel(url, datatype=args.remote_datatype, layout=args.remote_layout, scale=args.remote_scale,
                         batch_size=args.batch_size,
                         timeout=args.timeout, retries=args.retries, auth_env=args.auth_env)
    return judge_remote(kit, remote, max_queries=args.max_queries, audit=args.audit, sequential=not args.all_queries,
                        same_labels=not args.other_labels)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..judge.answers import read_labelled
    from ..judge.kit import open_kit
    from ..judge.protocol import Form
    from ..judge.query import LocalSuspect, judge, judge_answers

    kit = open_kit(args.fingerprint)
    if not args.suspect and not args.answers:
        raise CharexError("name at least one suspect model or --answers FILE")
    if args.transform:  # simulate an image API's channel on the queries (local and remote suspects)
        from ..make.channels import parse_channel

        if args.answers:
            raise CharexError("--transform simulates a channel for models you query; answers were already collected "
                              "through the real one")
        kit = kit.transformed(parse_channel(args.transform))
    remote = [spec for spec in args.suspect if spec.startswith(("http://", "https://"))]
    verdicts = []
    for spec in args.suspect:
        if spec in remote:
            verdicts.append(_remote(args, kit, spec))
            continue
        verdicts.append(judge(kit, LocalSuspect(load(args, spec), spec, same_labels=not args.other_labels), spec,
                              max_queries=args.max_queries,
                              sequential=args.max_queries is not None))
    # in the base's classes; in the suspect's own labels with --other-labels, or when a label is not one of the
    # base's classes and the kit holds a pair test
    labels = "any" if args.other_labels else "auto" if any(t.applies(Form(same_labels=False)) is None
                                                            for t in kit.queried) else "base"
    for path in args.answers or []:
        got, same = read_labelled(path, kit, labels)
        verdicts.append(judge_answers(kit, got, str(path), same, max_queries=args.max_queries))
    if args.json:
        print_json({"calibrated": kit.calibrated, "level": kit.level, "tests": kit.names, "origin": origin(kit),
                    "results": [v.to_dict() for v in verdicts]})
    else:
        for t in kit.tests:
            if not t.calibrated:
                print(f"note: {t.how_to_calibrate}")
                break
        for v in verdicts:
            print("\n".join(v.lines()))
    return verdict_exit(kit, verdicts)


def verdict_exit(kit: Any, verdicts: list[Any]) -> int:
    """0 when any suspect is judged derived, else 3 when the kit is uncalibrated or a suspect was one no test
    applies to (another architecture and label space), else 1."""
    if any(v.decision == "derived" for v in verdicts):
        return EXIT_DERIVED
    if not kit.calibrated or any(v.decision == "not applicable" for v in verdicts):
        return EXIT_UNCALIBRATED
    return EXIT_NOT_DERIVED


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..judge.kit import open_kit

    kit = open_kit(args.fingerprint)
    if not kit.single:
        return _inspect_kit(args, kit)
    fp = kit.sets[0]
    counts = [int((fp.targets == c).sum()) for c in range(int(fp.meta.get("num_classes", 0)))]
    info = {"path": str(args.fingerprint), "digest": fp.digest, "n": fp.n, "image_shape": list(fp.images.shape[1:]),
            "image_dtype": str(fp.images.dtype).replace("torch.", ""), "target_counts": counts,
            "config": fp.config.to_dict(), "meta": fp.meta, "calibration": fp.calibration}
    if args.json:
        print_json(info)
        return 0
    m, c = fp.meta, fp.config
    print(f"{args.fingerprint}\n  digest            {fp.digest}")
    print(f"  method            {c.method} (n={c.n}, steps={c.steps}, alpha={c.alpha:.5g}, delta={c.delta}, "
          f"q={c.q}, k={c.k}, seed={c.seed}, dtype={c.dtype})")
    print(f"  images            {fp.n} x {tuple(fp.images.shape[1:])} {info['image_dtype']}; "
          f"{m.get('num_classes')} classes, targets per class {counts}")
    print(f"  base model        {m.get('base_model')} digest {m.get('base_model_digest')}")
    refs = m.get("references") or []
    print(f"  references        {len(refs)} (ref_weight {c.ref_weight:g})" if refs else "  references        none")
    for r in refs:
        print(f"    {r['name']} digest {r['digest']}")
    for r in m.get("surrogates") or []:
        print(f"  surrogate         {r['name']} digest {r['digest']} (surrogate_weight {c.surrogate_weight:g})")
    print(f"  base match        {100 * m.get('base_match_rate', float('nan')):.1f}%  "
          f"(eta-optimal {100 * m.get('eta_optimal_rate', float('nan')):.1f}%)")
    print(f"  created           {m.get('created')} by charex {m.get('charex_version')}")
    cal = fp.calibration
    if cal is None:
        print("  calibration       none (verify reports match rates only)")
    else:
        null = f"spread in [{cal['s_min']:g}, {cal['s_max']:g}]" if cal.get("null") == "logit-normal" else \
            f"beta-binomial rho {cal['rho']:.3f}"
        print(f"  calibration       {len(cal['references'])} references, null mean {100 * cal['mu']:.1f}% ({null}), "
              f"derived at >= {cal['threshold_matches']}/{fp.n} and above the suspect's own chance "
              f"(level {cal['level']})")
        from ..judge.verify import calibration_floor

        floor = calibration_floor(cal, fp.n)
        if floor:
            print(f"  note              {floor}")
    return 0


def _inspect_kit(args: argparse.Namespace, kit: Any) -> int:
    from ..make.kit import describe

    from ..judge.kit import asks
    from ..judge.registry import READING

    info = {"path": str(args.fingerprint), "digest": kit.digest, "kind": "kit", "level": kit.level,
            "queries": kit.n, "meta": kit.meta, "origin": origin(kit),
            **{t.kind: t.inspect() for t in kit.tests if not asks(t)},
            "tests": [{"test": t.name, "queries": t.fp.n, "digest": t.fp.digest, "config": t.fp.config.to_dict(),
                       "meta": t.fp.meta, "calibration": t.fp.calibration} for t in kit.queried]}
    info.update({k.kind: None for k in READING if k.kind not in info})  # a kind the kit lacks: null, as before
    if args.json:
        print_json(info)
        return 0
    m = kit.sets[0].meta
    print(f"{args.fingerprint}\n  kit digest        {kit.digest}")
    print(f"  base model        {m.get('base_model')} digest {m.get('base_model_digest')}")
    print(f"  verdict           Bonferroni over the {len(kit.names)} test(s) (those that apply to a suspect) at level "
          f"{kit.level}; {kit.n} queries, {len(set(kit.keys))} distinct images (each sent once)")
    o = origin(kit)
    print(f"  origin            " + (f"fine-tuned from {o['parent']} (units match it at {o['parent_cosine']:.3f})"
                                     if o.get("parent") else o["note"]))
    describe(kit)
    for t in kit.queried:
        for role, name, digest in t.roles():
            print(f"    {t.name} {role:<9} {name}" + (f" digest {digest}" if digest else ""))
    print(f"  created           {kit.meta.get('created')} by charex {kit.meta.get('charex_version')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..judge.kit import open_kit
    from ..make.export import export_png

    kit = open_kit(args.fingerprint)
    out = export_png(kit.sets[0] if kit.single else kit, args.directory)
    files = len(list(out.glob("*.png")))
    repeats = f"; {kit.n - files} repeated images written once" if files < kit.n else ""
    print(f"wrote {out}/NNNN.png ({files} queries{repeats}) and {out}/labels.csv (keep it to yourself)")
    return 0


def origin(kit: Any) -> dict[str, Any]:
    """Where the kit takes the base to have begun (``fingerprint --parent``), and what a kit without it assumes."""
    from ..make.kit import FROM_SCRATCH

    got = (kit.meta or {}).get("origin")
    return got if got else {"parent": None, "note": FROM_SCRATCH + " (a kit made before charex knew of parents)"}


def register(add: Add) -> None:
    """Add the generate, calibrate, verify, inspect, export subcommands."""
    from ..judge.null import S_MAX, S_MIN

    g = add("generate", cmd_generate, EXAMPLES["generate"], "generate characteristic examples of a model and save them")
    g.add_argument("model", help="model file or bundled:NAME")
    g.add_argument("--preset", default="default", choices=["default", "stealth", "paper"],
                   help="default: the settings chosen on the validation pool, for suspects whose weights or honest "
                        "answers you get; stealth: small moves of your own natural images (--data) that survive "
                        "JPEG 75: JPEG-robust, NOT hidden (a statistics detector separates its queries; for an API "
                        "that may filter, the kit's mistake test asks unmodified natural images: charex fingerprint "
                        "--twin); "
                        "paper: the paper's LTRC (k=2, delta=0.03, q=10, 500 steps of 0.25/255, the paper profile's "
                        "step). Options below override the preset")
    g.add_argument("--references", nargs="+", metavar="MODEL",
                   help="independent models to push away from the targets (reference-contrastive generation); "
                        "they may not be used for calibration afterwards")
    g.add_argument("--ref-weight", type=float, help="weight of the reference term (default 8)")
    g.add_argument("--surrogates", nargs="+", metavar="MODEL",
                   help="your own students of MODEL (e.g. charex derive distill on your data) to pull the examples "
                        "toward, so that they transfer to students too; recorded, and refused for calibration")
    g.add_argument("--surrogate-weight", type=float, help="weight of the surrogate term (default 4)")
    g.add_argument("--select-from", type=int, metavar="N",
                   help="generate N candidates and keep the --n most conferrable (Lukas et al. 2021): most likely "
                        "on --selection-surrogates and least on --selection-references, models not used in "
                        "generation and then refused for calibration (docs/research-record.md: it did not help here)")
    g.add_argument("--selection-references", nargs="+", metavar="MODEL", help="--select-from: independent models")
    g.add_argument("--selection-surrogates", nargs="+", metavar="MODEL", help="--select-from: students of MODEL")
    g.add_argument("--eot", metavar="SPECS",
                   help="make the examples survive an image API's channel: the loss is also taken through each of "
                        "these comma-separated channels (e.g. jpeg:75 or jpeg:75,shift:1; see verify --transform)")
    g.add_argument("--method", choices=["vanilla", "rc", "rcgm", "ltrc"], help="method (default vanilla)")
    g.add_argument("--baseline", choices=["frontier", "ipguard", "sensitive"],
                   help="make another method's fingerprint instead, for comparison (data-based: starts from real "
                        "CIFAR-10 test images, --data): frontier stitching (Le Merrer et al. 2019), IPGuard "
                        "(Cao et al. 2021), sensitive samples (He et al. 2019)")
    g.add_argument("--start", choices=["noise", "natural"],
                   help="noise: from U[0,1] (the paper; every preset but stealth); natural: from real images "
                        "(--data); a trained detector still spots most of them (docs/research-record.md)")
    g.add_argument("--data", help="--baseline: CIFAR-10 folder (default: the shared copy); --start natural / --preset "
                                  "stealth: that, or a folder of class folders of your own images (any input size)")
    g.add_argument("--n", type=int, help="number of examples (default 100)")
    g.add_argument("--steps", type=int, help="sign-gradient steps (default 100; paper: 500)")
    g.add_argument("--alpha", type=float,
                   help="step size in [0,1] pixels (default 0.5/255; --preset paper: 0.25/255); the budget "
                        "alpha*steps sets the robustness/transferability trade-off (docs/research-record.md)")
    g.add_argument("--delta", type=float, help="weight-noise half-width (rc/rcgm/ltrc)")
    g.add_argument("--q", type=int, help="weight-noise samples averaged per step (rcgm/ltrc)")
    g.add_argument("--k", type=int, help="high-pass band: zero DCT coefficients with 1<=i+j<=k (ltrc)")
    g.add_argument("--eta", type=float, default=1e-6, help="eta-optimality loss threshold (default 1e-6)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype (default auto: bfloat16 where the CPU/GPU runs it natively, else float32)")
    g.add_argument("--noise-scope", default="all", choices=["all", "weights"],
                   help="perturb all learnable parameters (default) or only conv/linear weights")
    g.add_argument("--early-stop", action="store_true", help="freeze examples once their base loss < eta")
    g.add_argument("--input-shape", type=shape_arg, help="C,H,W (default: model card, else 3,32,32)")
    g.add_argument("-o", "--output", required=True, help="fingerprint file to write (.safetensors)")
    g.add_argument("--json", action="store_true", help="print a JSON summary")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(g)

    c = add("calibrate", cmd_calibrate, EXAMPLES["calibrate"],
            "fit the null match-rate distribution on independent reference models")
    c.add_argument("fingerprint")
    c.add_argument("--reference", nargs="+", required=True, help="independent models (at least 2)")
    c.add_argument("--level", type=float, default=0.01, help="significance level of 'derived' (default 0.01)")
    c.add_argument("--spread-min", type=float, default=S_MIN,
                   help=f"least spread of independent models' match rates on the logit scale (default {S_MIN}, chosen "
                        "on a validation pool; docs/method.md)")
    c.add_argument("--spread-max", type=float, default=S_MAX, help=f"largest spread (default {S_MAX})")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    add_model_args(c)

    v = add("verify", cmd_verify, EXAMPLES["verify"],
            "judge suspects with a kit (or one fingerprint): one verdict each, Bonferroni over the kit's tests "
            "(exit 0 derived, 1 not, 2 error, 3 uncalibrated)")
    v.add_argument("fingerprint")
    v.add_argument("suspect", nargs="*", help="suspect models: files, bundled:NAME, or a remote model "
                                              "http://HOST:PORT/v2/models/NAME (Open Inference Protocol v2)")
    v.add_argument("--answers", nargs="+", metavar="FILE",
                   help="labels collected from a system you cannot open, for the PNGs `charex export` wrote: CSV "
                        "with header file,label (file: NNNN.png or the example index; label: class index or name) "
                        "or JSON lines with those keys; a subset of the examples may be answered")
    v.add_argument("--other-labels", action="store_true",
                   help="the suspect answers another task (its own labels, any names or indices): only the kit's "
                        "pair test applies. Answers with a label outside the base's classes, and local models "
                        "with another class count, are taken so without this flag")
    r = v.add_argument_group("remote models (http://.../v2/models/NAME)")
    r.add_argument("--remote-datatype", default="FP32", choices=["FP32", "UINT8"],
                   help="FP32: pixels in [0, 1] (default); UINT8: 0-255")
    r.add_argument("--remote-layout", choices=["nchw", "nhwc"], help="default: what the metadata declares")
    r.add_argument("--remote-scale", type=float, default=1.0, choices=[1.0, 255.0],
                   help="FP32 pixel scale: 1 ([0, 1], default) or 255")
    r.add_argument("--batch-size", type=int, default=32, help="images per request at most (default 32)")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    r.add_argument("--retries", type=int, default=4, help="retries on 429/502/503/504 and connection errors")
    r.add_argument("--auth-env", metavar="VAR", help="environment variable holding the Authorization header value")
    v.add_argument("--max-queries", type=int, metavar="N",
                   help="ask any suspect (local too, as a stand-in for an API) at most N queries, all tests together, "
                        "stopping each test once its decision is settled; the verdict says how many it used (a "
                        "weight copy needs 100; a student 4,000 or more, and some students escape even the whole "
                        "set: docs/research-record.md)")
    r.add_argument("--audit", metavar="FILE", help="write every answer as JSON lines (time, file, label) to a new "
                                                   "file; re-check offline with --answers FILE")
    r.add_argument("--all-queries", action="store_true",
                   help="send every example (default: stop once the verdict can no longer change)")
    v.add_argument("--transform", metavar="SPEC",
                   help="pass the examples through what an image API may do before the suspect sees them: png, "
                        "jpeg:Q, noise:SIGMA (1/255 units), resize:FACTOR, shift:PIXELS, chained with + "
                        "(e.g. jpeg:75); to check that a fingerprint survives a channel before relying on it")
    v.add_argument("--json", action="store_true", help="print {\"results\": [...]} as JSON")
    v.add_argument("--quiet", action="store_true")
    add_model_args(v)

    i = add("inspect", cmd_inspect, EXAMPLES["inspect"],
            "show a fingerprint or kit file's tests, config, provenance and calibration")
    i.add_argument("fingerprint")
    i.add_argument("--json", action="store_true")

    e = add("export", cmd_export, EXAMPLES["export"],
            "write the queries (a kit's: every test's, numbered on) as PNG files plus labels.csv")
    e.add_argument("fingerprint")
    e.add_argument("directory")
