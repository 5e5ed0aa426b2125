import json

import pytest
import torch

from charex import FingerprintSet
from charex.cli import main


def gen_args(model, out, *extra):
    return ["generate", str(model), "--method", "ltrc", "--delta", "0.01", "--k", "2", "--q", "2", "--n", "30",
            "--steps", "60", "--alpha", "0.01", "--seed", "0", "--quiet", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, model_files):
    d = tmp_path_factory.mktemp("cli")
    # a generation reference and three calibration models: with two and no reference the tiny models' high
    # transfer leaves no possible verdict under the predictive null (docs/method.md)
    assert main(gen_args(model_files["base"], d / "fp.safetensors", "--references", str(model_files["ind4"]))) == 0
    assert main(["calibrate", str(d / "fp.safetensors"), "--reference", str(model_files["ind1"]),
                 str(model_files["ind2"]), str(model_files["ind5"]), "-o", str(d / "cal.safetensors")]) == 0
    return d


def test_generate_calibrate_verify(calibrated, model_files, capsys) -> None:
    fp = FingerprintSet.load(calibrated / "fp.safetensors")
    assert fp.n == 30 and fp.meta["base_match_rate"] == 1.0 and fp.config.k == 2
    capsys.readouterr()
    rc = main(["verify", str(calibrated / "cal.safetensors"), str(model_files["base"]), str(model_files["ind3"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    res = {r["suspect"]: r for r in out["results"]}
    base = res[str(model_files["base"])]
    assert set(base) >= {"suspect", "match_rate", "matches", "n", "p_value", "decision"}
    assert base["decision"] == "derived" and base["matches"] == 30
    rc = main(["verify", str(calibrated / "cal.safetensors"), str(model_files["ind3"])])
    assert rc in (0, 1)


def test_verify_uncalibrated_says_so(calibrated, model_files, capsys) -> None:
    rc = main(["verify", str(calibrated / "fp.safetensors"), str(model_files["base"])])
    out = capsys.readouterr().out
    assert rc == 3 and "not calibrated" in out and "30/30" in out


def test_inspect_and_export(calibrated, capsys, tmp_path) -> None:
    assert main(["inspect", str(calibrated / "cal.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "ltrc" in out and "calibration" in out and "3 references" in out
    assert main(["inspect", str(calibrated / "fp.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 30 and info["calibration"] is None and len(info["meta"]["base_model_digest"]) == 64
    assert main(["export", str(calibrated / "fp.safetensors"), str(tmp_path / "png")]) == 0
    files = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert len(files) == 31 and "labels.csv" in files
    from PIL import Image
    import numpy as np

    fp = FingerprintSet.load(calibrated / "fp.safetensors")
    arr = np.asarray(Image.open(tmp_path / "png" / "0003.png"))
    assert torch.equal(torch.from_numpy(arr.copy()).permute(2, 0, 1), fp.images[3])  # lossless 8-bit
    lines = (tmp_path / "png" / "labels.csv").read_text().splitlines()
    assert lines[0] == "file,target,class" and lines[4].startswith(f"0003.png,{int(fp.targets[3])}")
    assert main(["export", str(calibrated / "fp.safetensors"), str(tmp_path / "png")]) == 2  # not empty


@pytest.mark.parametrize("extra,msg", [
    (["--alpha", "0"], "alpha"), (["--alpha", "-1"], "alpha"), (["--q", "0"], "q must"),
    (["--delta", "-0.1"], "delta"), (["--k", "40"], "band k"),
    (["--input-shape", "1,16,16"], "does not accept input"),
])
def test_generate_bad_parameters(model_files, tmp_path, capsys, extra, msg) -> None:
    out = tmp_path / "fp.safetensors"
    assert main(gen_args(model_files["base"], out, *extra)) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_files(model_files, tmp_path, capsys) -> None:
    assert main(gen_args(tmp_path / "missing.safetensors", tmp_path / "o.safetensors")) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nofp.safetensors"), str(model_files["base"])]) == 2
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    assert main(gen_args(tmp_path / "pickled.pt", tmp_path / "o.safetensors")) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(gen_args(model_files["base"], tmp_path / "o.safetensors", "--arch", "nosuch")) == 2
    assert "unknown architecture" in capsys.readouterr().err
    p = tmp_path / "fp.safetensors"
    assert main(gen_args(model_files["base"], p)) == 0
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF
    p.write_bytes(bytes(raw))
    assert main(["inspect", str(p)]) == 2
    assert "digest mismatch" in capsys.readouterr().err
    (tmp_path / "trunc.safetensors").write_bytes(bytes(raw[: len(raw) // 2]))
    assert main(["verify", str(tmp_path / "trunc.safetensors"), str(model_files["base"])]) == 2


def test_nan_suspect(calibrated, tmp_path, capsys) -> None:
    from charex import save_model
    from conftest import make_tiny

    m = make_tiny(4)
    with torch.no_grad():
        m.model.classifier.weight.fill_(float("inf"))
    save_model(m, tmp_path / "nan.safetensors")
    assert main(["verify", str(calibrated / "cal.safetensors"), str(tmp_path / "nan.safetensors")]) == 2
    assert "NaN" in capsys.readouterr().err


def test_help_has_examples(capsys) -> None:
    for cmd in ("generate", "calibrate", "verify", "inspect", "export"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "example:" in capsys.readouterr().out


def test_generate_with_references_then_calibration_refuses_them(tmp_path, model_files, capsys) -> None:
    fp_path = tmp_path / "fp.safetensors"
    assert main(["generate", str(model_files["base"]), "--method", "vanilla", "--n", "12", "--steps", "20",
                 "--alpha", "0.02", "--references", str(model_files["ind1"]), "--ref-weight", "2", "--quiet",
                 "-o", str(fp_path)]) == 0
    fp = FingerprintSet.load(fp_path)
    assert fp.config.ref_weight == 2.0 and [r["name"] for r in fp.meta["references"]] == [str(model_files["ind1"])]
    capsys.readouterr()
    rc = main(["calibrate", str(fp_path), "--reference", str(model_files["ind1"]), str(model_files["ind2"]),
               "-o", str(tmp_path / "cal.safetensors")])
    assert rc == 2 and "generation reference" in capsys.readouterr().err
    assert not (tmp_path / "cal.safetensors").exists()
    assert main(["calibrate", str(fp_path), "--reference", str(model_files["ind2"]), str(model_files["ind3"]),
                 "--json", "-o", str(tmp_path / "cal.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["strength"] in ("ok", "weak", "impossible")


def test_generate_presets(tmp_path, model_files) -> None:
    from charex.types import PRESETS

    out = tmp_path / "paper.safetensors"
    # the paper preset, with only n and steps reduced from the command line
    assert main(["generate", str(model_files["base"]), "--preset", "paper", "--n", "4", "--steps", "2", "--quiet",
                 "-o", str(out)]) == 0
    c = FingerprintSet.load(out).config
    assert (c.method, c.k, c.delta, c.q, c.alpha, c.n, c.steps) == ("ltrc", 2, 0.03, 10, 0.25 / 255, 4, 2)
    assert PRESETS["paper"]["steps"] == 500


def test_generate_baseline_from_real_images(tmp_path, model_files, capsys) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_data import write_batches

    write_batches(tmp_path / "data", n=40)
    out = tmp_path / "fr.safetensors"
    assert main(["generate", str(model_files["base"]), "--baseline", "ipguard", "--n", "6", "--data",
                 str(tmp_path / "data" / "cifar-10-batches-py"), "--json", "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"] == "ipguard"
    assert FingerprintSet.load(out).meta["baseline"]["name"] == "ipguard"


def test_generate_with_conferrability_selection(tmp_path, model_files, capsys) -> None:
    out = tmp_path / "cae.safetensors"
    m = {k: str(v) for k, v in model_files.items()}
    args = ["generate", m["base"], "--n", "4", "--steps", "2", "--quiet", "--references", m["ind1"], "--surrogates",
            m["ind2"], "-o", str(out)]
    assert main(args + ["--select-from", "8"]) == 2  # selection models are required
    assert "--selection-references" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--select-from", "8", "--selection-references", m["ind3"], "--selection-surrogates",
                        m["ind4"]]) == 0
    fp = FingerprintSet.load(out)
    assert fp.n == 4 and fp.meta["selection"]["candidates"] == 8
    assert [r.get("role") for r in fp.meta["references"]] == [None, "selection"]
    assert main(["calibrate", str(out), "--reference", m["ind3"], m["ind5"], "-o", str(tmp_path / "c.st")]) == 2


def test_generate_from_natural_images(tmp_path, model_files) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_data import write_batches

    write_batches(tmp_path / "data", n=40)
    out = tmp_path / "nat.safetensors"
    assert main(["generate", str(model_files["base"]), "--start", "natural", "--n", "6", "--steps", "5", "--quiet",
                 "--data", str(tmp_path / "data" / "cifar-10-batches-py"), "-o", str(out)]) == 0
    assert FingerprintSet.load(out).meta["start"] == "natural"
    # the stealth preset starts from natural images by itself; --start noise overrides it like any option
    from charex.types import PRESETS

    assert main(["generate", str(model_files["base"]), "--preset", "stealth", "--n", "6", "--steps", "3", "--quiet",
                 "--data", str(tmp_path / "data" / "cifar-10-batches-py"), "-o", str(out)]) == 0
    fp = FingerprintSet.load(out)
    assert fp.meta["start"] == "natural" and PRESETS["stealth"]["start"] == "natural"
    assert (fp.config.alpha, fp.config.eot, fp.config.steps) == (PRESETS["stealth"]["alpha"],
                                                                  PRESETS["stealth"].get("eot", ""), 3)
    assert main(["generate", str(model_files["base"]), "--preset", "stealth", "--start", "noise", "--n", "6",
                 "--steps", "3", "--quiet", "-o", str(out)]) == 0
    assert "start" not in FingerprintSet.load(out).meta
