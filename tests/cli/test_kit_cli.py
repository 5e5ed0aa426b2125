"""The one path through the command line: charex fingerprint -> verify (models, answers, budget, remote), export,
inspect, scan and mistakes-verify with a kit; bad kits and answers give one clear error line and exit 2."""

import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from charex import load_model
from charex.cli import main
from charex.fingerprint import image_keys
from charex.judge.kit import Kit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from http_stub import JsonHandler  # noqa: E402


@pytest.fixture(scope="module")
def kit_file(tmp_path_factory, model_files):
    """A kit of the tiny base: twin ind1, reference ind2, calibration ind3..ind5, on 600 labelled 16x16 images."""
    d = tmp_path_factory.mktemp("kit")
    g = torch.Generator().manual_seed(2)
    for i in range(600):
        folder = d / "data" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    m = {k: str(v) for k, v in model_files.items()}
    out = d / "kit.safetensors"
    args = ["fingerprint", m["base"], "--twin", m["ind1"], "--reference", m["ind2"], "--calibration", m["ind3"],
            m["ind4"], m["ind5"], "--data", str(d / "data"), "--quiet", "--json", "-o", str(out)]
    assert main(args) == 0
    return out, m, d


def test_fingerprint_then_verify_gives_one_verdict_per_suspect(kit_file, capsys) -> None:
    out, m, _ = kit_file
    capsys.readouterr()
    assert main(["verify", str(out), m["base"], m["ind5"], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tests"] == ["weights", "examples", "mistakes", "pairs"] and res["level"] == 0.01
    base, other = res["results"]  # the base's own weights: settled before any query
    assert base["decision"] == "derived" and base["fired"] == "weights" and base["queries"] == 0
    assert set(base) >= {"decision", "p_value", "queries", "tests"}
    assert other["queries"] > 100 and len(other["tests"]) == 4 and other["tests"][2]["queries"] > 0
    assert other["tests"][3]["applies"] is False  # the pair test: suspects of another label space only
    assert main(["verify", str(out), m["base"]]) == 0
    text = capsys.readouterr().out
    assert "DERIVED" in text and "Bonferroni over the 3 tests that apply" in text and "caught by the weights test" \
        in text and "0 queries" in text
    # a budget holds for a local suspect too, all tests together
    assert main(["verify", str(out), m["ind5"], "--max-queries", "150", "--json"]) in (0, 1)
    v = json.loads(capsys.readouterr().out)["results"][0]
    assert v["sent"] <= 150 and v["queries"] <= 150


def test_export_answers_and_inspect(kit_file, tmp_path, capsys) -> None:
    out, m, _ = kit_file
    kit = Kit.load(out)
    assert main(["export", str(out), str(tmp_path / "q")]) == 0
    assert "repeated images written once" in capsys.readouterr().out
    rows = (tmp_path / "q" / "labels.csv").read_text().splitlines()
    distinct = len(set(image_keys(kit.images)))
    assert rows[0] == "file,target,class,test" and len(rows) == distinct + 1 and rows[-1].endswith(",pairs")
    assert len(list((tmp_path / "q").glob("*.png"))) == distinct
    # the base's own labels as an API would give them: the same verdict as the model itself
    base = load_model(m["base"])
    with torch.no_grad():
        labels = base(kit.images.float() / 255).argmax(1).tolist()
    full = tmp_path / "answers.csv"
    full.write_text("file,label\n" + "".join(f"{i:04d}.png,{lab}\n" for i, lab in enumerate(labels)))
    capsys.readouterr()
    assert main(["verify", str(out), "--answers", str(full), "--json"]) == 0
    v = json.loads(capsys.readouterr().out)["results"][0]
    assert v["decision"] == "derived" and v["queries"] == kit.n
    # answers that cover only the examples: a verdict on what was answered, saying so
    part = tmp_path / "part.csv"
    part.write_text("file,label\n" + "".join(f"{i:04d}.png,{labels[i]}\n" for i in range(kit.sets[0].n)))
    assert main(["verify", str(out), "--answers", str(part)]) == 0
    assert "mistakes: not answered" in capsys.readouterr().out
    # answers for another kit: a query index it does not have
    bad = tmp_path / "bad.csv"
    bad.write_text(f"file,label\n{kit.n + 5:04d}.png,1\n")
    assert main(["verify", str(out), "--answers", str(bad)]) == 2
    assert "not one of this fingerprint's" in capsys.readouterr().err
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Bonferroni over the 4 test(s)" in text and "mistakes" in text and "pairs" in text and "twin" in text and "weights" in text
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "kit" and [t["test"] for t in info["tests"]] == ["examples", "mistakes", "pairs"]


def test_scan_and_mistakes_verify_take_the_kit(kit_file, tmp_path, capsys) -> None:
    out, m, _ = kit_file
    lines = tmp_path / "scan.jsonl"
    assert main(["scan", "--fingerprints", str(out), "--suspects", m["base"], m["ind5"], "-o", str(lines),
                 "--workers", "1", "--quiet"]) == 0
    rows = {json.loads(r)["suspect"]: json.loads(r) for r in lines.read_text().splitlines()}
    assert rows[m["base"]]["decision"] == "derived" and rows[m["base"]]["fired"] == "weights"
    assert rows[m["base"]]["queries"] == 0
    assert rows[m["ind5"]]["queries"] > 100 and len(rows[m["ind5"]]["tests"]) == 4
    # the kit's mistake test alone, judged with the null the kit holds (no --independent)
    mis = Kit.load(out).sets[1]
    mis.save(tmp_path / "m.safetensors")
    capsys.readouterr()
    assert main(["mistakes-verify", str(tmp_path / "m.safetensors"), m["ind5"], "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["calibration"]["differences"]


def test_without_twins_the_kit_says_students_are_not_covered(model_files, tmp_path, capsys) -> None:
    m = {k: str(v) for k, v in model_files.items()}
    out = tmp_path / "k.safetensors"
    assert main(["fingerprint", m["base"], "--reference", m["ind2"], "--calibration", m["ind3"], m["ind4"],
                 "--quiet", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no twins given" in text and "not students" in text
    assert main(["fingerprint", m["base"], "--reference", m["ind3"], "--calibration", m["ind3"], m["ind4"],
                 "--quiet", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "both as" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_remote_suspect_judged_with_the_kit_cheapest_test_first(kit_file, tmp_path, capsys) -> None:
    out, m, _ = kit_file
    model = load_model(m["base"])
    posts = []

    class Serve(JsonHandler):
        def do_GET(self) -> None:
            self._send(200, json.dumps({"name": "m", "inputs": [{"name": "x", "datatype": "FP32",
                                                                 "shape": [-1, 3, 16, 16]}]}).encode())

        def do_POST(self) -> None:
            inp = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"][0]
            posts.append(inp["shape"][0])
            with torch.no_grad():
                logits = model(torch.tensor(np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])))
            self._send(200, json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": list(logits.shape),
                                                     "data": logits.flatten().tolist()}]}).encode())

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
        audit = tmp_path / "audit.jsonl"
        assert main(["verify", str(out), url, "--json", "--audit", str(audit)]) == 0
        v = json.loads(capsys.readouterr().out)["results"][0]
        assert v["decision"] == "derived" and v["sent"] == sum(posts) == v["queries"] <= 100
        assert v["tests"][0]["note"].startswith("not applicable: no weights")  # an endpoint: queries only
        assert v["tests"][2]["queries"] == 0  # the mistakes were never sent: the verdict was settled
        assert main(["verify", str(out), "--answers", str(audit), "--json"]) == 0  # re-checked offline
        assert json.loads(capsys.readouterr().out)["results"][0]["decision"] == "derived"
        Kit.load(out).sets[0].save(tmp_path / "examples.safetensors")  # another file: its answers are not these
        assert main(["verify", str(tmp_path / "examples.safetensors"), "--answers", str(audit)]) == 2
        assert "collected for another kit" in capsys.readouterr().err
    finally:
        srv.shutdown()


def test_audit_re_runs_both_tests_of_the_kit(kit_file, tmp_path, capsys) -> None:
    out, m, d = kit_file
    args = ["audit", str(out), "--base", m["base"], "--references", m["ind2"], "--twins", m["ind1"],
            "--calibration-references", m["ind3"], m["ind4"], m["ind5"], "--data", str(d / "data"), "--quiet"]
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["passed"] and set(rep["tests"]) == {"weights", "examples", "mistakes", "pairs"}
    assert {c["name"]: c["status"] for c in rep["tests"]["pairs"]["checks"]}["queries"] == "pass"
    assert {c["name"]: c["status"] for c in rep["tests"]["weights"]["checks"]} == {
        "weight sketch": "pass", "weight null re-measured": "pass"}
    names = {c["name"]: c["status"] for c in rep["tests"]["mistakes"]["checks"]}
    assert names["queries"] == "pass" and names["calibration re-measured"] == "pass"
    assert names["labelled images"] == "pass"
    # other labelled images: the data digest and the re-run both fail
    other = tmp_path / "data"
    for f in sorted((d / "data").rglob("*.png"))[:300]:
        (other / f.parent.name).mkdir(parents=True, exist_ok=True)
        (other / f.parent.name / f.name).write_bytes(f.read_bytes())
    assert main([*args[:-3], "--data", str(other), "--quiet"]) == 1
    assert "FAIL  mistakes: labelled images" in capsys.readouterr().out


def test_onnx_suspect_judged_with_the_kit(kit_file, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    out, m, _ = kit_file
    assert main(["export-model", m["base"], str(tmp_path / "base.onnx")]) == 0
    assert main(["export-model", m["ind5"], str(tmp_path / "other.onnx")]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), str(tmp_path / "base.onnx"), str(tmp_path / "other.onnx"), m["ind5"],
                 "--json"]) == 0
    base, other, other_torch = json.loads(capsys.readouterr().out)["results"]
    assert base["decision"] == "derived" and other["queries"] > 100
    assert other["p_value"] == pytest.approx(other_torch["p_value"], rel=1e-6)  # the same model, either way
