"""Shared fixtures of the remote-suspect tests."""

import pytest

from charex import GenerationConfig, calibrate, generate, load_model
from charex.derive import prune_model


@pytest.fixture(scope="session")
def fp_and_models(tmp_path_factory):
    """A fingerprint of bundled:base; suspects: a 50% pruned copy of it and a bundled independent model."""
    d = tmp_path_factory.mktemp("remote")
    base = load_model("bundled:base")
    pruned, _ = prune_model(base, 0.5, scope="global")
    refs = [load_model(f"bundled:{k}") for k in ("independent-1", "other-arch")]
    fp = generate(base, GenerationConfig(n=40, steps=30, dtype="float32"), references=refs)
    cal = calibrate(fp, {k: load_model(f"bundled:{k}") for k in ("independent-2", "independent-3", "reference-plain")})
    cal.save(d / "cal.safetensors")
    return d, cal, {"pruned": pruned, "other": load_model("bundled:independent-resnet8")}
