"""charex mistakes-make / mistakes-verify: a folder of the owner's labelled images in, verdicts and the exit-code
contract out; refusals exit 2 and write nothing."""

import json

import numpy as np
import pytest
from PIL import Image

from charex import FingerprintSet
from charex.cli import main


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """600 random 16 x 16 images in 10 class folders (random classes: every model makes many mistakes)."""
    root = tmp_path_factory.mktemp("owner-images")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"class{c}").mkdir()
        for i in range(60):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_make_then_verify(labelled, model_files, tmp_path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    rc = main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["ind1"]), str(model_files["ind2"]),
               "--reference", str(model_files["ind3"]), "--data", str(labelled), "--json", "-o", str(out)])
    made = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(made["sections"]) == 3 and FingerprintSet.load(out).n == made["queries"]
    rc = main(["mistakes-verify", str(out), str(model_files["base"]), str(model_files["ind5"]),
               "--independent", str(model_files["ind4"]), str(model_files["ind5"]), "--json"])
    res = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in res["results"]}
    assert rows[str(model_files["base"])]["rates"][0] == 1.0  # the base repeats every one of its own mistakes
    assert rc == (0 if any(r["derived"] for r in rows.values()) else 1)
    # a twin is no independent model; a plain verify refuses the file; both exit 2
    assert main(["mistakes-verify", str(out), str(model_files["ind5"]), "--independent", str(model_files["ind1"]),
                 str(model_files["ind4"])]) == 2
    assert main(["verify", str(out), str(model_files["ind5"])]) == 2
    assert "mistakes-verify" in capsys.readouterr().err


def test_make_refuses_bad_input_and_writes_nothing(labelled, model_files, tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["base"]),
                 "--data", str(labelled), "-o", str(out)]) == 2
    assert main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["ind1"]),
                 "--data", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert not out.exists()
