"""A model card is as untrusted as its file: it may not make charex import or call code, nor allocate a huge model."""

import json

import pytest
import torch
from safetensors.torch import save_file

from charex import load_model
from charex.errors import ModelLoadError
from charex.models import save_model


def evil(path, card):
    save_file({"w": torch.zeros(1)}, str(path), metadata={"charex_card": json.dumps(card)})
    return path


def test_card_cannot_import_code(tmp_path) -> None:
    """Regression: a card naming ``os:system`` ran a shell command while charex loaded a suspect."""
    marker = tmp_path / "pwned"
    f = evil(tmp_path / "m.safetensors", {"arch": "os:system", "arch_kwargs": {"command": f"touch {marker}"}})
    with pytest.raises(ModelLoadError, match="not in charex's registry"):
        load_model(f)
    side = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(side))
    (tmp_path / "w.json").write_text(json.dumps({"arch": "subprocess:getoutput", "arch_kwargs": {"cmd": "id"}}))
    with pytest.raises(ModelLoadError, match="not in charex's registry"):
        load_model(side)
    assert not marker.exists()


def test_import_path_allowed_when_the_user_names_it(tmp_path, trained_tiny) -> None:
    f = save_model(trained_tiny, tmp_path / "t.safetensors")
    m = load_model(f, arch="charex.models.architectures:TinyNet")  # the caller's own choice: imported
    assert m(torch.rand(1, 3, 16, 16)).shape[-1] == 10


def test_card_cannot_make_charex_allocate_a_huge_model(tmp_path) -> None:
    f = evil(tmp_path / "m.safetensors", {"arch": "cnn1", "arch_kwargs": {"width": 4096}})  # ~10^12 weights
    with pytest.raises(ModelLoadError, match="does not fit architecture"):
        load_model(f)
    f = evil(tmp_path / "k.safetensors", {"arch": "cnn1", "arch_kwargs": {"width": "wide", "x": [1]}})
    with pytest.raises(ModelLoadError, match="cannot be built"):
        load_model(f)
