"""Export a fingerprint set as PNG files plus labels.csv, to query an image-classification API."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CharexError
from ..fingerprint import FingerprintSet


def export_png(fp: FingerprintSet | Any, out_dir: str | Path) -> Path:
    """Write ``NNNN.png`` per example and ``labels.csv`` (file, target, class[, test]) into ``out_dir``; an image the
    set holds more than once (a mistake test's sections can share one) is written once, under its first number, and
    ``charex verify --answers`` gives its answer to every copy.

    ``fp``: a fingerprint set, or a kit (:class:`charex.judge.kit.Kit`): then every test's queries, numbered on
    across tests, and a ``test`` column naming each query's test. The images are the exact 8-bit pixels (lossless
    PNG). The folder appears whole or not at all: it is built next to ``out_dir`` and renamed into place.
    ``out_dir`` must not exist or be empty.
    """
    from PIL import Image

    tests = getattr(fp, "queried", None)
    names = [] if tests is None else [t.name for t in tests for _ in range(t.n)]
    meta = fp.classes if tests is not None else fp.meta
    if fp.images.dtype.is_floating_point:
        raise CharexError("only quantized (uint8) fingerprint sets can be exported as PNG")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CharexError(f"export folder {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = meta.get("classes") or []
    images, targets = fp.images, fp.targets
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["file", "target", "class"] + (["test"] if names else []))
        seen: set[bytes] = set()
        for i, key in enumerate(fp.keys):
            if key in seen:
                continue
            seen.add(key)
            arr = images[i].permute(1, 2, 0).numpy()
            img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            name = f"{i:04d}.png"
            img.save(tmp / name, format="PNG")
            t = int(targets[i])
            w.writerow([name, t, classes[t] if t < len(classes) else ""] + ([names[i]] if names else []))
        (tmp / "labels.csv").write_text(rows.getvalue())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
