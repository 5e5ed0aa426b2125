import hashlib
import io
import pickle
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from charex.data import download_cifar10, load_cifar10
from charex.data.cifar10 import CIFAR10_CLASSES
from charex.errors import CharexError


def write_batches(root, n=20, seed=0):
    """Small CIFAR-10 python batches in the official format (pickled dicts of numpy arrays)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        arrays[name] = (data, labels)
    return d, arrays


def test_official_batches(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    d, arrays = write_batches(tmp_path / "src")
    tr = load_cifar10(tmp_path / "src", "train")
    te = load_cifar10(d, "test")
    assert tr.images.shape == (100, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert torch.equal(te.images[0], torch.from_numpy(arrays["test_batch"][0][0].reshape(3, 32, 32)))
    assert te.labels.tolist() == arrays["test_batch"][1]
    t0 = time.perf_counter()
    again = load_cifar10(d, "train")  # from the .npy cache
    assert time.perf_counter() - t0 < 1.0 and again.digest == tr.digest
    assert any((tmp_path / "cache" / "data").iterdir())


def test_malicious_batch_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    d, _ = write_batches(tmp_path / "src")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(CharexError, match="not a valid CIFAR-10 batch"):
        load_cifar10(d, "test", cache=False)


def test_image_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "f" / split / c / f"{i}.png")
    ds = load_cifar10(tmp_path / "f", "test")
    assert ds.images.shape == (20, 3, 32, 32) and ds.labels.tolist() == [i // 2 for i in range(20)]
    png = np.asarray(Image.open(tmp_path / "f" / "test" / "bird" / "1.png"))
    assert torch.equal(ds.images[5], torch.from_numpy(png.copy()).permute(2, 0, 1))


def test_missing_and_bad_roots(tmp_path) -> None:
    with pytest.raises(CharexError, match="not found"):
        load_cifar10(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharexError, match="neither"):
        load_cifar10(tmp_path / "empty")
    with pytest.raises(CharexError, match="split"):
        load_cifar10(tmp_path / "empty", "val")


def _archive(tmp_path):
    src, _ = write_batches(tmp_path / "pack")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    (tmp_path / "cifar.tar.gz").write_bytes(buf.getvalue())
    return tmp_path / "cifar.tar.gz", hashlib.md5(buf.getvalue()).hexdigest()


def test_download_from_file_url_with_checksum(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    arc, md5 = _archive(tmp_path)
    out = download_cifar10(tmp_path / "dl", url=arc.as_uri(), md5=md5)
    assert (out / "data_batch_5").is_file()
    assert len(load_cifar10(out, "train")) == 100
    with pytest.raises(CharexError, match="MD5"):
        download_cifar10(tmp_path / "dl2", url=arc.as_uri(), md5="0" * 32)
    assert not (tmp_path / "dl2" / "cifar-10-batches-py").exists()


def test_start_images_any_input_size(tmp_path, monkeypatch) -> None:
    """Natural starts: CIFAR-10's test split for 32 x 32 models, the owner's own image folder for any other size."""
    from charex.data.starts import start_images

    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "c", n=20)
    a = start_images(tmp_path / "c", (3, 32, 32), 5, seed=1)
    assert a.shape == (5, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, start_images(tmp_path / "c", (3, 32, 32), 5, seed=1))  # seeded
    assert start_images(tmp_path / "c", (3, 16, 16), 5, seed=1).shape == (5, 3, 16, 16)  # CIFAR-10, resized
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "own" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "own" / cls / f"{i}.png")
    b = start_images(tmp_path / "own", (3, 48, 48), 4, seed=0)
    assert b.shape == (4, 3, 48, 48)
    assert start_images(tmp_path / "own", (3, 32, 32), 2, seed=0).shape == (2, 3, 32, 32)  # not CIFAR: the folder
    with pytest.raises(CharexError, match="at least 7"):
        start_images(tmp_path / "own", (3, 48, 48), 7, seed=0)
    with pytest.raises(CharexError, match="needs --data"):
        start_images(None, (3, 48, 48), 2, seed=0)
    with pytest.raises(CharexError, match="square RGB"):
        start_images(tmp_path / "own", (1, 48, 48), 2, seed=0)


def test_a_download_into_the_cache_is_found_and_a_failed_fetch_is_one_line(tmp_path, monkeypatch) -> None:
    """`charex data download` with no folder unpacks into the cache, where the demo finds it when the shared copy is
    absent; `charex demo --fetch-data` without network says so in one line and goes on."""
    from charex.cli import main
    from charex.data import cifar10 as c10
    from charex.experiments import demo

    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    arc, md5 = _archive(tmp_path)
    monkeypatch.setattr(c10, "CIFAR10_MD5", md5)
    monkeypatch.setattr(c10.download_cifar10, "__defaults__", (c10.CIFAR10_URL, md5))
    assert main(["data", "download", "--url", arc.as_uri()]) == 0
    assert (c10.downloaded_root() / "test_batch").is_file()
    said: list[str] = []
    monkeypatch.setattr("charex.data.default_cifar10_root", lambda: None)

    def offline(*a, **k):
        raise CharexError("could not download CIFAR-10 from https://...: no network")

    monkeypatch.setattr("charex.data.download_cifar10", offline)
    demo._fetch(said.append)
    assert len(said) == 2 and "going on without it" in said[1]
