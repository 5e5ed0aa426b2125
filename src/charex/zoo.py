"""A model cache keyed by lineage name (and data digest): never train the same model twice.

Files are written atomically, so an interrupted training leaves no half-written model;
asking for a cached lineage loads it instead of rebuilding it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .errors import CharexError
from .lineage import file_stem
from .models import load_model, read_card, save_model


class ModelCache:
    """Models stored as ``<root>/<stem>.safetensors`` with their card (lineage, accuracy, ...).

    Example:
        >>> cache = ModelCache("runs/models")  # doctest: +SKIP
        >>> base = cache.get_or_create("cnn1-w0.25(seed=0,epochs=15)", train_fn)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, lineage: str, data_digest: str | None = None) -> Path:
        """File a lineage is (or would be) stored in."""
        key = f"{lineage}@{data_digest}" if data_digest else lineage
        return self.root / f"{file_stem(key)}.safetensors"

    def get(self, lineage: str, data_digest: str | None = None) -> nn.Module | None:
        """The cached model, or None."""
        p = self.path(lineage, data_digest)
        return load_model(p) if p.is_file() else None

    def put(self, model: nn.Module, data_digest: str | None = None, **card: Any) -> Path:
        """Store ``model`` under the lineage in its card."""
        lineage = card.get("lineage") or getattr(model, "card", {}).get("lineage")
        if not lineage:
            raise CharexError("cannot cache a model whose card has no lineage name")
        return save_model(model, self.path(lineage, data_digest), {**card, "lineage": lineage})

    def adopt(self, lineage: str, data_digest: str, folders: list[Path]) -> None:
        """Copy a model trained elsewhere (bundled, or a ``charex train`` output folder) into the cache when its
        card names exactly this lineage on the same data; nothing when the cache already holds it."""
        if self.path(lineage, data_digest).is_file():
            return
        for folder in folders:
            for p in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
                card = read_card(p)
                if card.get("lineage") == lineage and card.get("data_digest") == data_digest:
                    self.path(lineage, data_digest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, self.path(lineage, data_digest))
                    return

    def get_or_create(self, lineage: str, make: Callable[[], nn.Module], data_digest: str | None = None) -> nn.Module:
        """Load ``lineage`` from the cache, or build it with ``make()`` and store it."""
        got = self.get(lineage, data_digest)
        if got is not None:
            return got
        model = make()
        card = getattr(model, "card", {})
        if card.get("lineage") != lineage:
            raise CharexError(f"built model has lineage {card.get('lineage')!r}, expected {lineage!r}")
        self.put(model, data_digest)
        return load_model(self.path(lineage, data_digest))

    def entries(self) -> list[dict[str, Any]]:
        """Card summaries of every cached model, sorted by lineage."""
        out = []
        for p in sorted(self.root.glob("*.safetensors")) if self.root.is_dir() else []:
            try:
                card = read_card(p)
            except CharexError:
                continue
            out.append({"lineage": card.get("lineage", p.stem), "test_accuracy": card.get("test_accuracy"),
                        "path": str(p), "size_bytes": p.stat().st_size})
        return sorted(out, key=lambda e: e["lineage"])


def format_entries(entries: list[dict[str, Any]]) -> str:
    """A plain-text table of cache entries."""
    if not entries:
        return "(empty)"
    width = max(len(e.get("spec", e["path"])) for e in entries)
    lines = [f"{'name (what to type)':<{width}}  {'test acc':>8}  lineage"]
    for e in entries:
        acc = e["test_accuracy"]
        lines.append(f"{e.get('spec', e['path']):<{width}}  "
                     f"{(f'{100 * acc:.2f}%' if isinstance(acc, (int, float)) else '-'):>8}  {e['lineage']}")
    return "\n".join(lines)


def dumps(entries: Any) -> str:
    """JSON of cache entries."""
    return json.dumps(entries, indent=2)
