"""Fuzzing kit files (charex fingerprint): mutated bytes and forged headers with recomputed digests end in a valid
result or in exit 2 with one error line, never a crash, and never a verdict from a kit that is not the original."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from charex import GenerationConfig, load_model
from charex.judge.kit import KIT_KEY, Kit, _canonical, _digest
from charex.make.kit import make_kit

from .conftest import check
from .test_fuzz_files import forged_header, mutated, scratch


@pytest.fixture(scope="module")
def kit_world(world, tmp_path_factory):
    """A small kit of bundled:base (examples + mistakes on random images with random labels: many mistakes)."""
    d = tmp_path_factory.mktemp("fuzzkit")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1500, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (1500,), generator=g)
    kit = make_kit(load_model("bundled:base"), [load_model(f"bundled:{k}") for k in ("independent-2", "independent-3")],
                   twins=[load_model("bundled:independent-1")], images=images, labels=labels, per_model=40,
                   config=GenerationConfig(n=12, steps=5, dtype="float32"), progress=False)
    kit.save(d / "kit.safetensors")
    return {"kit": kit, "bytes": (d / "kit.safetensors").read_bytes(), "suspect": world["suspect"]}


def _argv(command: str, f, d, suspect) -> list[str]:
    return {"verify": ["verify", str(f), str(suspect)], "inspect": ["inspect", str(f), "--json"],
            "export": ["export", str(f), str(d / "png")],
            "scan": ["scan", "--fingerprints", str(f), "--suspects", str(suspect), "-o", str(d / "s.jsonl"),
                     "--workers", "1", "--quiet"]}[command]


@given(data=st.data(), command=st.sampled_from(["verify", "inspect", "export", "scan"]))
def test_kit_bytes(kit_world, data, command) -> None:
    """A mutated kit is refused, or reads as exactly the original content."""
    raw = data.draw(mutated(kit_world["bytes"], hot=8192))
    d = scratch()
    f = d / "kit.safetensors"
    f.write_bytes(raw)
    try:
        same = Kit.load(f).digest == kit_world["kit"].digest
    except ValueError:
        same = False
    rc, _ = check(_argv(command, f, d, kit_world["suspect"]), invalid=not same and command != "scan",
                  outputs=(d / "png",))
    if command == "scan" and not same:
        assert rc == 2  # scan refuses a bad fingerprint file before any work
    shutil.rmtree(d)


INVALID = [("level", 1.5), ("level", "0.01"), ("level", None), ("tests", []), ("tests", "all"), ("digests", [1, 2]),
           ("format", 2)]


@given(data=st.data(), command=st.sampled_from(["verify", "inspect", "export"]))
def test_kit_forged_header(kit_world, data, command) -> None:
    """A kit header rewritten with a recomputed kit digest: a forged test no longer matches its own digest, a bad
    level or format is refused; whatever charex accepts, it judges without crashing."""
    kit = kit_world["kit"]
    header = json.loads(_canonical(kit._header()))
    if data.draw(st.booleans()):
        key, value = data.draw(st.sampled_from(INVALID))
        header[key], invalid = value, True
    else:
        original = json.loads(_canonical(kit._header()))
        header = data.draw(forged_header(header))
        invalid = any(header.get(k) != original[k] for k in ("tests", "digests", "format"))
    from safetensors.torch import save

    text = _canonical(header)
    tensors = kit._tensors()
    d = scratch()
    f = d / "kit.safetensors"
    f.write_bytes(save(tensors, metadata={KIT_KEY: text, "digest": _digest(text, tensors)}))
    check(_argv(command, f, d, kit_world["suspect"]), invalid=invalid, outputs=(d / "png",))
    shutil.rmtree(d)
