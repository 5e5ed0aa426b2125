"""CIFAR-10 as uint8 arrays from the official python batches, an ImageFolder tree, or a download.

Decoded arrays are cached as ``.npy`` files (no pickle) under the cache folder, keyed by
the source path and its modification times, so a second load takes well under a second.
The official batches are pickles: they are read with an unpickler that only admits the
numpy array types they contain.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_bytes
from ..errors import CharexError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


@dataclass(frozen=True)
class ArrayDataset:
    """Images as uint8 N x C x H x W and int64 labels, plus the class names and a content digest."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    digest: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: torch.Tensor) -> "ArrayDataset":
        """Rows ``idx`` (digest extended by the index bytes)."""
        h = hashlib.sha256((self.digest + hashlib.sha256(idx.numpy().tobytes()).hexdigest()).encode()).hexdigest()
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes, h[:16])


def sample_images(images: torch.Tensor, labels: torch.Tensor, count: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random real images (uint8 N x C x H x W, drawn with ``seed``) as float [0, 1], with their labels.

    The start images of the baselines and of natural-start generation."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise CharexError(f"need real uint8 N x C x H x W images (--data), got {images.dtype} {tuple(images.shape)}")
    if len(images) < count:
        raise CharexError(f"need at least {count} real images, got {len(images)}")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[idx].float() / 255, labels[idx].long()


def thief_split(data: ArrayDataset, split: str) -> tuple[ArrayDataset, str]:
    """The thief's training data: ``all``, or a fixed random half (``half-a`` or ``half-b``; the halves are
    disjoint and the same on every machine). Returns the data and its name (e.g. ``train-half-b``)."""
    if split == "all":
        return data, "train"
    if split not in ("half-a", "half-b"):
        raise CharexError(f"data split must be all, half-a or half-b, got {split!r}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(12345))
    idx = perm[: len(data) // 2] if split == "half-a" else perm[len(data) // 2:]
    return data.subset(idx.sort().values), f"train-{split}"


def cache_dir() -> Path:
    """charex's cache folder: $CHAREX_CACHE, else ~/.cache/charex."""
    return Path(os.environ.get("CHAREX_CACHE", Path.home() / ".cache" / "charex"))


def default_cifar10_root() -> Path | None:
    """The shared CIFAR-10 copy next to the project (``../shared/datasets/cifar10``), else the one ``charex data
    download`` put in the cache (:func:`downloaded_root`), if present."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "datasets" / "cifar10"
        if cand.is_dir():
            return cand
    cand = Path.cwd().parent / "shared" / "datasets" / "cifar10"
    if cand.is_dir():
        return cand
    cached = downloaded_root()
    return cached if (cached / "test_batch").is_file() else None


def downloaded_root() -> Path:
    """Where ``charex data download`` (no folder given) and ``charex demo --fetch-data`` put the official archive's
    batches: ``<cache>/cifar10/cifar-10-batches-py``."""
    return cache_dir() / "cifar10" / "cifar-10-batches-py"


class _ArrayUnpickler(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise CharexError(f"{path} is not a valid CIFAR-10 batch file: {e}") from e
    if len(labels) != len(data) or labels.min() < 0 or labels.max() > 9:
        raise CharexError(f"{path}: labels do not match the images or lie outside 0..9")
    return data, labels


def _find_root(root: Path) -> tuple[str, Path]:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        return "batches", root
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder", root
    raise CharexError(f"{root} holds neither CIFAR-10 python batches (cifar-10-batches-py/data_batch_1..5, "
                      "test_batch) nor an ImageFolder tree (train/<class>/*, test/<class>/*)")


def _source_key(kind: str, root: Path, split: str) -> str:
    files = [root / b for b in _BATCHES[split]] if kind == "batches" else [root / split] + sorted((root / split).iterdir())
    stamp = "|".join(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in files if p.exists())
    return hashlib.sha256(f"{kind}|{root.resolve()}|{split}|{stamp}".encode()).hexdigest()[:24]


def _decode_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    base = root / split
    if not base.is_dir():
        raise CharexError(f"CIFAR-10 folder {base} is missing")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if tuple(classes) != CIFAR10_CLASSES:
        raise CharexError(f"{base} must hold the 10 CIFAR-10 class folders {CIFAR10_CLASSES}, found {classes}")
    imgs, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((base / name).iterdir()):
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB"))
            if a.shape != (32, 32, 3):
                raise CharexError(f"{f}: expected a 32x32 RGB image, got {a.shape}")
            imgs.append(a.transpose(2, 0, 1))
            labels.append(c)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def load_cifar10(root: str | Path | None = None, split: str = "train", *, cache: bool = True) -> ArrayDataset:
    """Load a CIFAR-10 split as uint8 N x 3 x 32 x 32 images and int64 labels.

    Args:
        root: the official ``cifar-10-batches-py`` folder (or its parent), or an ImageFolder
            tree with ``train/`` and ``test/``; default: the shared copy ``../shared/datasets/cifar10``.
        split: ``train`` or ``test``.
        cache: keep decoded arrays in the cache folder for fast reloads.

    Example:
        >>> ds = load_cifar10("data/cifar-10-batches-py", "test")  # doctest: +SKIP
        >>> ds.images.shape
        torch.Size([10000, 3, 32, 32])
    """
    if split not in _BATCHES:
        raise CharexError(f"split must be 'train' or 'test', got {split!r}")
    if root is None:
        root = default_cifar10_root()
        if root is None:
            raise CharexError("no CIFAR-10 location given and no shared copy found: pass --data PATH "
                              "(or download it with `charex data download`)")
    root = Path(root)
    if not root.exists():
        raise CharexError(f"CIFAR-10 path not found: {root}")
    kind, root = _find_root(root)
    key = _source_key(kind, root, split)
    cx, cy = cache_dir() / "data" / f"cifar10-{key}-x.npy", cache_dir() / "data" / f"cifar10-{key}-y.npy"
    if cache and cx.is_file() and cy.is_file():
        x, y = np.load(cx, allow_pickle=False), np.load(cy, allow_pickle=False)
    else:
        if kind == "batches":
            parts = [_read_batch(root / b) for b in _BATCHES[split]]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            x, y = _decode_folder(root, split)
        if cache:
            for path, arr in ((cx, x), (cy, y)):
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                atomic_write_bytes(path, buf.getvalue())
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), CIFAR10_CLASSES, digest)


def download_cifar10(dest: str | Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, *,
                     progress: bool = True) -> Path:
    """Download and unpack the official CIFAR-10 python archive into ``dest``, with a progress bar; verify its MD5.

    ``url`` may be ``file://`` or a local mirror. Returns the ``cifar-10-batches-py`` folder.
    """
    dest = Path(dest)
    out = dest / "cifar-10-batches-py"
    if (out / "test_batch").is_file():
        return out
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - user-chosen URL
            total = int(r.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc="CIFAR-10", disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    chunks.append(chunk)
                    bar.update(len(chunk))
            data = b"".join(chunks)
    except OSError as e:
        raise CharexError(f"could not download CIFAR-10 from {url}: {e}") from e
    got = hashlib.md5(data).hexdigest()  # noqa: S324 - checksum published by the dataset authors
    if got != md5:
        raise CharexError(f"CIFAR-10 archive from {url} has MD5 {got}, expected {md5}: refusing to unpack it")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".cifar10-extract-{os.getpid()}"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")
    os.replace(tmp / "cifar-10-batches-py", out)
    tmp.rmdir()
    return out
