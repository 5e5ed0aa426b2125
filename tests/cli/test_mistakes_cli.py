"""charex mistakes-make / mistakes-verify: a folder of the owner's labelled images in, verdicts and the exit-code
contract out; refusals exit 2 and write nothing."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charex import FingerprintSet
from charex.cli import main
from charex.fingerprint import image_keys


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
    # a twin is no independent model (exit 2); plain verify gives no verdict without the null (exit 3)
    assert main(["mistakes-verify", str(out), str(model_files["ind5"]), "--independent", str(model_files["ind1"]),
                 str(model_files["ind4"])]) == 2
    capsys.readouterr()
    assert main(["verify", str(out), str(model_files["ind5"])]) == 3  # a test without its null: no verdict
    assert "mistakes-verify" in capsys.readouterr().out


def test_make_refuses_bad_input_and_writes_nothing(labelled, model_files, tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["base"]),
                 "--data", str(labelled), "-o", str(out)]) == 2
    assert main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["ind1"]),
                 "--data", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert not out.exists()


def test_answers_collected_elsewhere_score_like_the_model(labelled, model_files, tmp_path, capsys) -> None:
    """Export the queries, answer them as an API would (from the PNGs on disk, half of them), verify the answers."""
    import csv

    import torch

    from charex import load_model
    from charex.judge.mistakes import score
    from charex.judge.verify import predict

    out = tmp_path / "m.safetensors"
    assert main(["mistakes-make", str(model_files["base"]), "--twin", str(model_files["ind1"]),
                 "--data", str(labelled), "-o", str(out)]) == 0
    assert main(["export", str(out), str(tmp_path / "png")]) == 0
    fp = FingerprintSet.load(out)
    names = [r["file"] for r in csv.DictReader(open(tmp_path / "png" / "labels.csv"))]
    x = torch.stack([torch.from_numpy(np.array(Image.open(tmp_path / "png" / f))).permute(2, 0, 1) for f in names])
    suspect = load_model(str(model_files["ind5"]))
    labels = predict(suspect, x.float() / 255).tolist()
    for rows, path in ((range(len(names)), tmp_path / "all.csv"), (range(0, len(names), 2), tmp_path / "half.csv")):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, ["file", "label"])
            w.writeheader()
            w.writerows({"file": names[i], "label": labels[i]} for i in rows)
    capsys.readouterr()
    rc = main(["mistakes-verify", str(out), "--answers", str(tmp_path / "all.csv"), str(tmp_path / "half.csv"),
               "--independent", str(model_files["ind3"]), str(model_files["ind4"]), "--json"])
    res = {r["model"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rc in (0, 1)
    full, half = res[str(tmp_path / "all.csv")], res[str(tmp_path / "half.csv")]
    assert full["counts"] == list(score(fp, suspect).counts) and sum(full["sizes"]) == fp.n
    keys = image_keys(fp.images)  # an exported file answers every copy of its image
    asked = {keys[int(Path(names[i]).stem)] for i in range(0, len(names), 2)}
    assert sum(half["sizes"]) == sum(k in asked for k in keys) and len(names) < fp.n
    assert main(["mistakes-verify", str(out), "--independent", str(model_files["ind3"]),
                 str(model_files["ind4"])]) == 2  # neither a suspect nor answers
