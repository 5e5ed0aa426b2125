import json
import struct

import pytest
import torch

from charex import FingerprintSet, GenerationConfig, generate
from charex.errors import FingerprintFileError


@pytest.fixture
def fp(trained_tiny):
    return generate(trained_tiny, GenerationConfig(method="rcgm", n=6, steps=10, alpha=0.02, delta=0.01, q=2, seed=0))


def test_round_trip(fp, tmp_path) -> None:
    p = fp.save(tmp_path / "fp.safetensors")
    back = FingerprintSet.load(p)
    assert torch.equal(back.images, fp.images) and torch.equal(back.targets, fp.targets)
    assert back.config == fp.config and back.meta == fp.meta and back.digest == fp.digest
    assert back.images.dtype == torch.uint8 and back.targets.dtype == torch.int64
    assert len(back.meta["base_model_digest"]) == 64


def test_float_round_trip(trained_tiny, tmp_path) -> None:
    fp = generate(trained_tiny, GenerationConfig(method="vanilla", n=3, steps=3), quantize=False)
    back = FingerprintSet.load(fp.save(tmp_path / "f.safetensors"))
    assert back.images.dtype == torch.float32 and torch.equal(back.images, fp.images)


def _tamper_metadata(raw: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    return struct.pack("<Q", len(new)) + new + raw[8 + n:]


def test_tampered_pixel_refused(fp, tmp_path) -> None:
    p = fp.save(tmp_path / "fp.safetensors")
    raw = bytearray(p.read_bytes())
    raw[-100] ^= 1  # flip a bit of a stored pixel/target
    p.write_bytes(bytes(raw))
    with pytest.raises(FingerprintFileError, match="digest mismatch"):
        FingerprintSet.load(p)


def test_tampered_metadata_refused(fp, tmp_path) -> None:
    p = fp.save(tmp_path / "fp.safetensors")

    def edit(h):
        meta = json.loads(h["__metadata__"]["charex"])
        meta["meta"]["base_match_rate"] = 0.5
        h["__metadata__"]["charex"] = json.dumps(meta)

    p.write_bytes(_tamper_metadata(p.read_bytes(), edit))
    with pytest.raises(FingerprintFileError, match="digest mismatch"):
        FingerprintSet.load(p)


def test_truncated_missing_and_foreign_files(fp, tmp_path) -> None:
    p = fp.save(tmp_path / "fp.safetensors")
    (tmp_path / "t.safetensors").write_bytes(p.read_bytes()[:-50])
    with pytest.raises(FingerprintFileError, match="corrupt or truncated"):
        FingerprintSet.load(tmp_path / "t.safetensors")
    with pytest.raises(FingerprintFileError, match="not found"):
        FingerprintSet.load(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(FingerprintFileError):
        FingerprintSet.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(FingerprintFileError, match="not a charex fingerprint"):
        FingerprintSet.load(tmp_path / "w.safetensors")


def test_save_is_atomic(fp, tmp_path, monkeypatch) -> None:
    p = fp.save(tmp_path / "fp.safetensors")
    before = p.read_bytes()
    import charex._io as io

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    real = io.atomic_write_with
    monkeypatch.setattr(io, "atomic_write_bytes", lambda path, data: real(path, boom))
    import charex.fingerprint as fpm

    monkeypatch.setattr(fpm, "atomic_write_bytes", lambda path, data: real(path, boom))
    with pytest.raises(RuntimeError):
        fp.save(p)
    assert p.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["fp.safetensors"]


def test_invalid_sets_rejected() -> None:
    cfg = GenerationConfig(method="vanilla")
    with pytest.raises(FingerprintFileError, match="targets"):
        FingerprintSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), cfg)
    with pytest.raises(FingerprintFileError, match="targets must lie"):
        FingerprintSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 12]), cfg, {"num_classes": 10})
