"""``charex verify FP --answers FILE``: verdicts from labels collected elsewhere (issue: models you cannot open)."""

import csv
import json

import pytest
import torch

from charex import FingerprintSet, load_model
from charex.judge.answers import read_answers
from charex.cli import main
from charex.errors import CharexError
from charex.judge.query import verify, verify_answers
from charex.judge.verify import predict


@pytest.fixture(scope="module")
def cal_fp(tmp_path_factory, model_files):
    d = tmp_path_factory.mktemp("answers")
    assert main(["generate", str(model_files["base"]), "--n", "30", "--steps", "40", "--alpha", "0.02", "--quiet",
                 "--references", str(model_files["ind4"]), "-o", str(d / "fp.safetensors")]) == 0
    assert main(["calibrate", str(d / "fp.safetensors"), "--reference", str(model_files["ind1"]),
                 str(model_files["ind2"]), str(model_files["ind5"]), "--quiet", "-o", str(d / "cal.safetensors")]) == 0
    assert main(["export", str(d / "cal.safetensors"), str(d / "png")]) == 0
    return d


def answer_file(path, fp, model, classes=False, rows=None, jsonl=False):
    """Answers as an API would give them: the model's labels for the exported PNGs, read back from disk."""
    from PIL import Image
    import numpy as np

    names = [r["file"] for r in csv.DictReader(open(path.parent / "png" / "labels.csv"))]
    x = torch.stack([torch.from_numpy(np.array(Image.open(path.parent / "png" / f))).permute(2, 0, 1) for f in names])
    labels = predict(model, x.float() / 255).tolist()
    names = [names[i] for i in (rows if rows is not None else range(len(names)))]
    cls = fp.meta.get("classes") or [str(c) for c in range(10)]
    out = [{"file": f, "label": cls[labels[int(f[:4])]] if classes else labels[int(f[:4])]} for f in names]
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in out) + "\n")
    else:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, ["file", "label"])
            w.writeheader()
            w.writerows(out)
    return path


def test_answers_give_the_same_verdict_as_the_model(cal_fp, model_files, capsys) -> None:
    fp = FingerprintSet.load(cal_fp / "cal.safetensors")
    for key in ("base", "ind3"):
        model = load_model(model_files[key])
        f = answer_file(cal_fp / f"{key}.csv", fp, model)
        got = verify_answers(fp, read_answers(f, fp), key)
        want = verify(fp, {key: model})[0]
        assert (got.matches, got.n, got.decision) == (want.matches, want.n, want.decision)
        assert got.p_value == pytest.approx(want.p_value)
    f = answer_file(cal_fp / "base.jsonl", fp, load_model(model_files["base"]), classes=True, jsonl=True)
    capsys.readouterr()
    assert main(["verify", str(cal_fp / "cal.safetensors"), "--answers", str(f), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["decision"] == "derived" and r["answered"] == 30 and r["examples"] == 30


def test_partial_answers_use_what_was_answered(cal_fp, model_files, capsys) -> None:
    fp = FingerprintSet.load(cal_fp / "cal.safetensors")
    f = answer_file(cal_fp / "part.csv", fp, load_model(model_files["base"]), rows=range(0, 30, 2))
    v = verify_answers(fp, read_answers(f, fp))
    assert v.n == 15 and v.matches == 15
    assert {k: v.extra[k] for k in ("answered", "examples")} == {"answered": 15, "examples": 30}
    assert v.p_value == max(v.extra["calibrated_p_value"], v.extra["chance_p_value"])
    capsys.readouterr()
    main(["verify", str(cal_fp / "cal.safetensors"), "--answers", str(f)])
    assert "among the 15 of 30 examples answered" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("file,label\n", "holds no answers"),
    ("name,answer\n0000.png,1\n", "must name 'file' and 'label'"),
    ("file,label\n0000.png,1\n0000.png,2\n", "answered twice"),
    ("file,label\n0000.png,1\n9999.png,2\n", "not one of this fingerprint's 30 examples"),
    ("file,label\ncat.jpg,1\n", "neither an exported file name"),
    ("file,label\n0001.png,zebra\n", "not a class of this fingerprint"),
    ("file,label\n0001.png,12\n", "outside [0, 10)"),
    ("file,label\n0001.png,\n", "needs both 'file' and 'label'"),
])
def test_bad_answers_files_are_refused(cal_fp, tmp_path, capsys, content, message) -> None:
    fp = FingerprintSet.load(cal_fp / "cal.safetensors")
    f = tmp_path / "a.csv"
    f.write_text(content)
    with pytest.raises(CharexError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        read_answers(f, fp)
    assert main(["verify", str(cal_fp / "cal.safetensors"), "--answers", str(f)]) == 2
    assert message.split("'")[0] in capsys.readouterr().err


def test_bad_json_lines_and_no_suspect(cal_fp, tmp_path, capsys) -> None:
    fp = FingerprintSet.load(cal_fp / "cal.safetensors")
    f = tmp_path / "a.jsonl"
    f.write_text('{"file": "0000.png", "label": 1}\nnot json\n')
    with pytest.raises(CharexError, match="line 2: not JSON"):
        read_answers(f, fp)
    assert main(["verify", str(cal_fp / "cal.safetensors")]) == 2
    assert "at least one suspect" in capsys.readouterr().err
