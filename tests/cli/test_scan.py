"""``charex scan``: every fingerprint x every suspect, streamed, resumable, the same on Ray."""

import builtins
import json

import pytest
import torch

from charex import GenerationConfig, calibrate, generate
from charex.cli import main
from charex.errors import CharexError
from charex.models import Normalized, build_arch, save_model
from charex.judge.scan import run_scan
from charex.make.kit import make_kit
from conftest import make_tiny

TIMING = ("seconds", "load_seconds")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, trained_tiny):
    d = tmp_path_factory.mktemp("scan")
    (d / "fps").mkdir()
    (d / "models").mkdir()
    refs = [make_tiny(s, train_steps=40) for s in (51, 52)]
    for i, seed in enumerate((0, 1)):
        fp = generate(trained_tiny, GenerationConfig(n=12, steps=10, alpha=0.02, seed=seed, dtype="float32"),
                      references=refs)
        if i == 0:
            fp = calibrate(fp, {"a": make_tiny(53, train_steps=40), "b": make_tiny(54, train_steps=40)})
        fp.save(d / "fps" / f"fp{i}.safetensors")
    images = torch.randint(0, 256, (600, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 10, (600,), generator=torch.Generator().manual_seed(3))
    make_kit(trained_tiny, {"a": make_tiny(53, train_steps=40), "b": make_tiny(54, train_steps=40)},
             twins={"t": make_tiny(55, train_steps=40)}, images=images, labels=labels, progress=False,
             config=GenerationConfig(n=12, steps=10, alpha=0.02, dtype="float32")).save(d / "fps" / "kit.safetensors")
    save_model(trained_tiny, d / "models" / "copy.safetensors")
    for s in (61, 62, 63):
        save_model(make_tiny(s), d / "models" / f"ind{s}.safetensors")
    five = Normalized(build_arch("tiny", width=8, num_classes=5), (0.5,) * 3, (0.25,) * 3,
                      {"arch": "tiny", "arch_kwargs": {"width": 8, "num_classes": 5}, "input_shape": [3, 16, 16]})
    save_model(five, d / "models" / "five-classes.safetensors")
    (d / "models" / "broken.safetensors").write_bytes(b"garbage")
    return d


def strip(path):
    return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k not in TIMING}, sort_keys=True)
                  for line in path.read_text().splitlines())


def test_scan_streams_skips_errors_and_resumes(zoo, tmp_path, capsys) -> None:
    out = tmp_path / "scan.jsonl"
    assert main(["scan", "--fingerprints", str(zoo / "fps"), "--suspects", str(zoo / "models"), "-o", str(out),
                 "--workers", "2", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * 6 and len({(r["suspect"], r["fingerprint"]) for r in rows}) == 18
    by = {(r["suspect"].rsplit("/", 1)[-1], r["fingerprint_path"].rsplit("/", 1)[-1]): r for r in rows}
    assert by[("copy.safetensors", "fp0.safetensors")]["decision"] == "derived"
    assert by[("copy.safetensors", "fp1.safetensors")]["decision"] == "uncalibrated"
    kit = by[("copy.safetensors", "kit.safetensors")]  # a kit: one verdict, its tests, the one that fired
    assert kit["decision"] == "derived" and kit["fired"] in ("weights", "examples", "mistakes")
    assert len(kit["tests"]) == 4 and len(by[("ind61.safetensors", "kit.safetensors")]["tests"]) == 4
    assert "5 output classes" in by[("five-classes.safetensors", "fp0.safetensors")]["skipped"]
    assert by[("broken.safetensors", "fp0.safetensors")]["error"].startswith("cannot load")
    assert "| fingerprint | checked |" in capsys.readouterr().out
    # resume: nothing is redone; a torn last line (a crash mid-write) is dropped and that pair redone
    assert run_scan([zoo / "fps"], [str(zoo / "models")], out, progress=False)["written"] == 0
    raw = out.read_bytes()
    out.write_bytes(raw[:-20])
    again = run_scan([zoo / "fps"], [str(zoo / "models")], out, progress=False)
    assert again["written"] == 1 and strip(out) == strip_bytes(raw)


def strip_bytes(raw):
    return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k not in TIMING}, sort_keys=True)
                  for line in raw.decode().splitlines())


def test_scan_on_ray_equals_local(zoo, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    lst = tmp_path / "suspects.txt"
    lst.write_text("# suspects\n" + "\n".join(str(p) for p in sorted((zoo / "models").iterdir())) + "\n")
    run_scan([zoo / "fps"], [str(lst)], local, workers=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_scan([zoo / "fps"], [str(lst)], remote, ray_address="auto", progress=False)
    finally:
        ray.shutdown()
    assert summary["written"] == 18 and strip(local) == strip(remote)


def test_scan_without_ray_says_how_to_install(zoo, tmp_path, monkeypatch) -> None:
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CharexError, match=r"charex\[ray\]"):
        run_scan([zoo / "fps"], [str(zoo / "models" / "copy.safetensors")], tmp_path / "o.jsonl", ray_address="auto",
                 progress=False)
    with pytest.raises(CharexError, match="no fingerprint files"):
        run_scan([tmp_path], ["x"], tmp_path / "o.jsonl", progress=False)
