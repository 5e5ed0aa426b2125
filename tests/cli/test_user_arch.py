"""A user architecture named as ``--arch package.module:callable`` whose module makes tensors when imported
(a mean/std constant, as real code often has) works in every command: generate, calibrate, verify, scan and a
suspect served over the Open Inference Protocol (issue 23: it failed with "Tensor on device meta")."""

from __future__ import annotations

import http.server
import importlib
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from charex import FingerprintSet, load_model
from charex.judge.verify import match_count
from charex.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from http_stub import JsonHandler  # noqa: E402

MODULE = '''
import torch
from torch import nn

MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)   # made at import: an ordinary CPU tensor
STD = torch.full((1, 3, 1, 1), 0.25)


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.body((x - MEAN) / STD)
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    name = f"userpkg_{abs(hash(str(tmp_path)))}"
    pkg = tmp_path / "code" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    files = {}
    for seed in range(5):
        torch.manual_seed(seed)
        net = importlib.import_module(f"{name}.nets").Net()
        files[seed] = tmp_path / f"w{seed}.safetensors"
        save_file(net.state_dict(), files[seed])
    for m in [m for m in sys.modules if m.startswith(name)]:  # the commands import it themselves, first time
        del sys.modules[m]
    yield f"{name}.nets:Net", files
    for m in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[m]


def test_user_arch_with_import_time_tensors_through_every_command(user_package, tmp_path, capsys) -> None:
    arch, w = user_package
    user = ["--arch", arch]
    fp, cal = tmp_path / "fp.safetensors", tmp_path / "cal.safetensors"
    assert main(["generate", str(w[0]), *user, "--input-shape", "3,16,16", "--n", "8", "--steps", "3", "--quiet",
                 "--dtype", "float32", "--references", str(w[1]), "-o", str(fp)]) == 0, capsys.readouterr().err
    assert main(["calibrate", str(fp), "--reference", str(w[2]), str(w[3]), "--quiet", *user, "-o", str(cal)]) == 0
    capsys.readouterr()
    assert main(["verify", str(cal), str(w[0]), str(w[4]), "--json", *user]) in (0, 1)
    out = json.loads(capsys.readouterr().out)
    expected = match_count(load_model(str(w[0]), arch=arch), FingerprintSet.load(cal))
    assert out["results"][0]["matches"] == expected  # what the same model gives in this process
    (tmp_path / "fps").mkdir()
    (tmp_path / "fps" / "cal.safetensors").write_bytes(cal.read_bytes())
    lines = tmp_path / "scan.jsonl"
    assert main(["scan", "--fingerprints", str(tmp_path / "fps"), "--suspects", str(w[0]), "-o", str(lines),
                 *user]) in (0, 1), capsys.readouterr().err
    row = json.loads(lines.read_text().splitlines()[0])
    assert row.get("matches") == expected, row


def test_user_arch_suspect_served_over_the_inference_protocol(user_package, tmp_path, capsys) -> None:
    arch, w = user_package
    model = load_model(str(w[0]), arch=arch)

    class Serve(JsonHandler):
        def do_GET(self) -> None:
            self._send(200, json.dumps({"name": "m", "inputs": [{"name": "x", "datatype": "FP32",
                                                                 "shape": [-1, 3, 16, 16]}]}).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            inp = body["inputs"][0]
            pixels = torch.tensor(np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"]))
            with torch.no_grad():
                logits = model(pixels)
            self._send(200, json.dumps({"outputs": [{"name": "logits", "datatype": "FP32",
                                                     "shape": list(logits.shape),
                                                     "data": logits.flatten().tolist()}]}).encode())

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        fp, cal = tmp_path / "fp.safetensors", tmp_path / "cal.safetensors"
        user = ["--arch", arch]
        assert main(["generate", str(w[0]), *user, "--input-shape", "3,16,16", "--n", "6", "--steps", "3",
                     "--quiet", "--dtype", "float32", "-o", str(fp)]) == 0
        assert main(["calibrate", str(fp), "--reference", str(w[2]), str(w[3]), "--quiet", *user,
                     "-o", str(cal)]) == 0
        capsys.readouterr()
        url = f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
        assert main(["verify", str(cal), url, "--all-queries", "--json"]) in (0, 1)
        expected = match_count(model, FingerprintSet.load(cal))
        assert json.loads(capsys.readouterr().out)["results"][0]["matches"] == expected
    finally:
        srv.shutdown()


def test_user_arch_beside_bundled_models_and_its_derived_copies(user_package, tmp_path, capsys) -> None:
    """Issue 30: ``--arch`` reaches only the files whose card names no architecture (or names that one), so a user
    model is calibrated against bundled models in one call; ``FILE::ARCH`` names one file's; a copy charex derives
    from it loads with either route and says which to use without; ``derive`` on a program refuses before any work."""
    arch, w = user_package
    fp, cal = tmp_path / "fp.safetensors", tmp_path / "cal.safetensors"
    assert main(["generate", str(w[0]), "--arch", arch, "--input-shape", "3,32,32", "--n", "8", "--steps", "3",
                 "--quiet", "--dtype", "float32", "-o", str(fp)]) == 0, capsys.readouterr().err
    assert main(["calibrate", str(fp), "--reference", "bundled:independent-3", "bundled:reference-wide", str(w[2]),
                 "--arch", arch, "--quiet", "-o", str(cal)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["calibrate", str(fp), "--reference", "bundled:independent-3", f"{w[2]}::{arch}", "--quiet",
                 "-o", str(tmp_path / "cal2.safetensors")]) == 0, capsys.readouterr().err
    q = tmp_path / "q.safetensors"
    assert main(["derive", "quantize", str(w[0]), "--arch", arch, "--to", "float16", "-o", str(q)]) == 0
    capsys.readouterr()
    for route in ([str(q), "--arch", arch], [f"{q}::{arch}"]):
        assert main(["verify", str(cal), *route, "--json"]) in (0, 1), capsys.readouterr().err
        capsys.readouterr()
    assert main(["verify", str(cal), str(q)]) == 2
    assert f"{q}::{arch}" in capsys.readouterr().err
    program = tmp_path / "m.pt2"
    net = load_model(str(w[0]), arch=arch).model
    torch.export.save(torch.export.export(net.eval(), (torch.rand(2, 3, 32, 32),)), program)
    assert main(["derive", "quantize", str(program), "-o", str(tmp_path / "p.safetensors")]) == 2
    assert "no architecture charex can rebuild" in capsys.readouterr().err
    assert not (tmp_path / "p.safetensors").exists()
