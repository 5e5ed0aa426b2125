"""``charex scan``: every registered fingerprint against every suspect model, streamed, resumable.

Each suspect is loaded once and checked against every fingerprint or kit whose input shape and class count fit it
(the others are listed as skipped, with the reason); fingerprints are read once. One JSON line per
(fingerprint, suspect) pair is appended to the output as soon as its suspect is done, so a crash loses no
finished line; re-running with the same output skips the pairs already there (a torn last line is dropped).
A suspect that cannot be loaded or crashes becomes error lines, never the end of the scan.

Work runs locally (a small process pool) or, with ``ray_address``, as Ray tasks: suspects spread over the
cluster, the fingerprints shared through Ray's object store. Both run the same function per suspect, so the
lines are identical.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .._io import read_utf8
from ..errors import CharexError, first_line
from .kit import kit_from_bytes
from .protocol import Form

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".pt2", ".onnx", ".ckpt")


def expand_fingerprints(specs: Sequence[str | Path]) -> list[Path]:
    """Fingerprint files from files and folders (``*.safetensors`` inside a folder), in a stable order."""
    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            out += sorted(p.glob("*.safetensors"))
        elif p.is_file():
            out.append(p)
        else:
            raise CharexError(f"fingerprint path not found: {p}")
    if not out:
        raise CharexError("no fingerprint files given")
    return out


def expand_suspects(specs: Sequence[str]) -> list[str]:
    """Suspect specs from files, ``bundled:NAME``, ``hf:...``, Hugging Face model folders, folders (the model files
    and Hugging Face model folders inside) and list files (``.txt``/``.lst``: one spec per line, ``#`` comments),
    in a stable order without duplicates."""
    from ..models.huggingface import is_hf_folder

    out: list[str] = []
    for s in specs:
        p = Path(s)
        if s.startswith(("bundled:", "hf:")) or is_hf_folder(p):
            out.append(s)
        elif p.is_dir():
            out += [str(f) for f in sorted(p.iterdir())
                    if f.suffix.lower() in MODEL_SUFFIXES and f.is_file() or is_hf_folder(f)]
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst"):
            out += [line.strip() for line in read_utf8(p, "suspect list").splitlines()
                    if line.strip() and not line.startswith("#")]
        else:
            out.append(s)  # a model file, or a missing one: reported as an error line for that suspect
    return list(dict.fromkeys(out))


def done_pairs(output: Path) -> set[tuple[str, str]]:
    """(suspect, fingerprint digest) pairs already in ``output``; a torn last line is cut off the file.

    A file that is not charex scan output (a line that is not a scan result, or a tail that is not a torn one)
    is an error and is left as it is.
    """
    if not output.is_file():
        return set()
    raw = output.read_bytes()
    cut = raw[: raw.rfind(b"\n") + 1]
    if cut != raw and not raw[len(cut):].startswith(b"{"):
        raise CharexError(f"{output} does not end like charex scan output (a JSON line); choose a new -o file")
    pairs = set()
    for i, line in enumerate(cut.split(b"\n")[:-1], 1):
        try:
            r = json.loads(line)
            pairs.add((r["suspect"], r["fingerprint"]))
        except (ValueError, KeyError, TypeError, RecursionError):  # ValueError: JSON and UTF-8 errors
            raise CharexError(f"{output}, line {i} is not a line of charex scan output; choose a new -o file, "
                              "or remove that line to resume") from None
    if cut != raw:  # a crash mid-line: drop the torn tail so appends stay valid JSON lines
        output.write_bytes(cut)
    return pairs


def check_suspect(spec: str, fingerprints: list[tuple[str, str, bytes]], skip: Sequence[str] = (),
                  load_options: dict[str, Any] | None = None) -> list[dict]:
    """All result lines of one suspect: load it once, then verify it against every fitting fingerprint.

    ``fingerprints``: (path, digest, file bytes) triples (bytes so that workers and Ray tasks need no shared
    disk). ``skip``: fingerprint digests already done for this suspect. ``load_options``: keyword arguments of
    :func:`charex.models.load_model` (``arch``, ``arch_kwargs``, ``normalization``, ...), for every suspect.
    """
    import torch

    from ..models import load_model
    from ..models.probe import probe_model
    from .query import LocalSuspect, judge

    torch.set_num_threads(1)
    todo = [(p, d, b) for p, d, b in fingerprints if d not in set(skip)]
    lines: list[dict[str, Any]] = []
    if not todo:
        return lines
    base = {"suspect": spec}
    t0 = time.perf_counter()
    try:
        model = load_model(spec, **(load_options or {}))
    except Exception as e:  # any failure to load is this suspect's error, never the scan's
        return [{**base, "fingerprint": d, "fingerprint_path": p, "error": f"cannot load: {first_line(e)}"}
                for p, d, _ in todo]
    load_s = time.perf_counter() - t0
    for path, digest, blob in todo:
        row: dict[str, Any] = {**base, "fingerprint": digest, "fingerprint_path": path}
        try:
            kit = kit_from_bytes(blob)
            first = kit.sets[0]
            shape, classes = first.meta.get("input_shape", list(first.images.shape[1:])), first.meta.get("num_classes")
            reads = len(kit.queried) < len(kit.tests)  # a test that reads the suspect judges any head
            if not reads:  # without one only the kit's input shape (and, without a test of another label space,
                try:  # its classes) are judged
                    other = any(t.applies(Form(same_labels=False)) is None for t in kit.queried)
                    probe_model(model, shape, None if other else classes, name=spec)
                except CharexError as e:
                    lines.append({**row, "skipped": first_line(e)})
                    continue
            t1 = time.perf_counter()
            v = judge(kit, LocalSuspect(model, spec, probed=not reads), spec)
            d = v.to_dict()
            row.update({k: d[k] for k in ("matches", "n", "match_rate") if k in d})
            row.update(p_value=v.p_value, decision=v.decision, queries=v.queries, fired=v.fired,
                       seconds=round(time.perf_counter() - t1, 4))
            if len(kit.names) > 1:
                row["tests"] = [{k: t.get(k) for k in ("test", "statistic", "p_value", "queries")} for t in v.tests]
        except Exception as e:  # a crash on one pair is that pair's error line
            row["error"] = first_line(e)
        lines.append(row)
    for r in lines:
        r["load_seconds"] = round(load_s, 4)
    return lines


def run_scan(fingerprints: Sequence[str | Path], suspects: Sequence[str], output: str | Path, *, workers: int = 2,
             ray_address: str | None = None, progress: bool = True,
             on_line: Callable[[dict], None] | None = None,
             load_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scan every pair not yet in ``output``; returns a summary (pairs written, derived, errors, pairs/s).

    ``load_options``: how to load every suspect (``charex.models.load_model`` keywords, e.g. ``arch``)."""
    from tqdm.auto import tqdm

    fps = expand_fingerprints(fingerprints)
    loaded = []
    for p in fps:
        raw = p.read_bytes()
        kit = kit_from_bytes(raw, str(p))  # refuses tampered files before any work starts
        loaded.append((str(p), kit.id, raw))
    sus = expand_suspects(suspects)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_pairs(out)
    jobs = [(s, [d for _, d, _ in loaded if (s, d) in done]) for s in sus]
    jobs = [(s, skip) for s, skip in jobs if len(skip) < len(loaded)]
    total = sum(len(loaded) - len(skip) for _, skip in jobs)
    counts = {"written": 0, "derived": 0, "skipped": 0, "errors": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="pair", desc="scan", disable=not progress)
    with out.open("a") as fh:
        for lines in _execute(jobs, loaded, workers, ray_address, load_options or {}):
            for r in lines:
                fh.write(json.dumps(r, sort_keys=True) + "\n")
                counts["written"] += 1
                counts["derived"] += r.get("decision") == "derived"
                counts["skipped"] += "skipped" in r
                counts["errors"] += "error" in r
                if on_line:
                    on_line(r)
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(lines))
    bar.close()
    secs = time.perf_counter() - t0
    return {**counts, "already_done": len(done), "suspects": len(sus), "fingerprints": len(loaded),
            "seconds": round(secs, 2), "pairs_per_second": round(counts["written"] / secs, 2) if secs else None}


def _execute(jobs: list[tuple[str, list[str]]], fps: list[tuple[str, str, bytes]], workers: int,
             ray_address: str | None, opts: dict[str, Any]) -> Iterator[list[dict]]:
    if ray_address:
        yield from _execute_ray(jobs, fps, ray_address, opts)
        return
    if workers <= 1 or len(jobs) <= 1:
        for spec, skip in jobs:
            yield check_suspect(spec, fps, skip, opts)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_suspect, spec, fps, skip, opts) for spec, skip in jobs]
        for f in _as_completed(futures):
            yield f.result()


def _as_completed(futures: Iterable[Any]) -> Iterator[Any]:
    from concurrent.futures import as_completed

    yield from as_completed(list(futures))


def _execute_ray(jobs: list[tuple[str, list[str]]], fps: list[tuple[str, str, bytes]],
                 address: str, opts: dict[str, Any]) -> Iterator[list[dict]]:
    from .._ray import connect

    ray = connect(address)
    ref = ray.put(fps)  # the fingerprints travel once, through the object store
    task = ray.remote(num_cpus=1)(lambda spec, f, skip: check_suspect(spec, f, skip, opts))
    pending = [task.remote(spec, ref, skip) for spec, skip in jobs]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def summary_table(path: str | Path) -> str:
    """A Markdown table of an output file: per fingerprint, suspects judged derived / checked / skipped / errors."""
    rows: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        s = rows.setdefault(r["fingerprint"], {"path": r.get("fingerprint_path"), "derived": [], "checked": 0,
                                               "skipped": 0, "errors": 0})
        s["checked"] += "decision" in r
        s["skipped"] += "skipped" in r
        s["errors"] += "error" in r
        if r.get("decision") == "derived":
            s["derived"].append(r["suspect"])
    lines = ["| fingerprint | checked | derived | skipped | errors | judged derived |", "|---|---|---|---|---|---|"]
    for d, s in rows.items():
        names = ", ".join(s["derived"][:5]) + (" ..." if len(s["derived"]) > 5 else "")
        lines.append(f"| {s['path']} ({d[:12]}) | {s['checked']} | {len(s['derived'])} | {s['skipped']} | "
                     f"{s['errors']} | {names} |")
    return "\n".join(lines)
