"""Fuzzing the files a user or a suspect hands to charex: answers, fingerprints, model files and cards, scan lists."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from charex.fingerprint import FingerprintSet, _canonical, _digest

from .conftest import check

INTERESTING = [b"\x00", b"\xff", b'"', b"{", b"}", b"[", b",", b"\n", b"\r", b"-1", b"1e999", b"NaN", b"\xc3\x28",
               b"\xef\xbb\xbf", b" " * 7, b"9" * 40]


@st.composite
def mutated(draw, data: bytes, hot: int | None = None) -> bytes:
    """``data`` after 1-4 byte-level edits (flip, overwrite, insert, delete, truncate, duplicate); with ``hot``,
    half the positions fall in the first ``hot`` bytes (a file's header)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            buf += draw(st.binary(min_size=1, max_size=8))
            continue
        top = min(hot, len(buf)) if hot and draw(st.booleans()) else len(buf)
        i = draw(st.integers(0, top - 1))
        op = draw(st.sampled_from(["flip", "put", "insert", "delete", "truncate", "dup"]))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "put":
            chunk = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
            buf[i:i + len(chunk)] = chunk
        elif op == "insert":
            buf[i:i] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[i:i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del buf[i:]
        else:
            j = draw(st.integers(i, min(len(buf), i + 64)))
            buf[j:j] = buf[i:j]
    return bytes(buf)


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="charex-fuzz-"))


# ---------------------------------------------------------------- answers files (CSV and JSON lines)

VALID_FILES = lambda i: [f"{i:04d}.png", str(i), f"some/dir/{i:04d}.png", f"{i:04d}.PNG", f"C:\\x\\{i:04d}.png"]  # noqa
BAD_FILES = ["\u00b2", "12.png", "0012.png", "-1", "abc", "0001.jpg", "\u0661", "1.5", "99999999999999999999999.png", " "]
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


@st.composite
def answer_rows(draw):
    """(rows, expected answers or None when the file is invalid by construction)."""
    rows, answers, invalid = [], {}, False
    for _ in range(draw(st.integers(0, 14))):
        i = draw(st.integers(0, 11))
        if draw(st.integers(0, 9)) == 0:
            file, ok_file = draw(st.sampled_from(BAD_FILES)), False
        else:
            file, ok_file = draw(st.sampled_from(VALID_FILES(i))), True
        kind = draw(st.sampled_from(["int", "str", "name", "bad"]))
        c = draw(st.integers(0, 9))
        if kind == "int":
            label, ok_label = c, True
        elif kind == "str":
            label, ok_label = str(c), True
        elif kind == "name":
            label, ok_label = CLASSES[c], True
        else:
            label, ok_label = draw(st.sampled_from([10, -1, "10", "cat?", "", 3.5, True, None, [1], "Cat", "1e0"])), False
        rows.append({"file": file, "label": label})
        if not (ok_file and ok_label) or (ok_file and i in answers):
            invalid = True
        if ok_file:
            answers[i] = c
    return rows, (None if invalid or not rows else answers)


@given(case=answer_rows(), fmt=st.sampled_from(["csv", "jsonl"]))
@example(case=([{"file": "0001.png", "label": True}], None), fmt="jsonl")  # bool label: int("True") crashed
@example(case=([{"file": "\u00b2", "label": 1}], None), fmt="csv")  # '²'.isdigit(), but int('²') raised
def test_answers_structured(world, case, fmt) -> None:
    rows, expected = case
    d = scratch()
    path = d / f"answers.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["file", "label"])
        w.writeheader()
        w.writerows({"file": r["file"], "label": "" if r["label"] is None else r["label"]} for r in rows)
        path.write_text(buf.getvalue())
    rc, out = check(["verify", str(world["cal"]), "--answers", str(path), "--json"], invalid=expected is None)
    if expected is not None:
        r = json.loads(out)["results"][0]
        targets = world["fp"].targets.tolist()
        assert r["answered"] == len(expected)
        assert r["matches"] == sum(targets[i] == c for i, c in expected.items())
    shutil.rmtree(d)


def valid_answers(world, fmt: str) -> bytes:
    labels = world["labels"]
    if fmt == "jsonl":
        return "".join(json.dumps({"file": f"{i:04d}.png", "label": lab}) + "\n" for i, lab in enumerate(labels)).encode()
    return ("file,label\n" + "".join(f"{i:04d}.png,{CLASSES[lab]}\n" for i, lab in enumerate(labels))).encode()


@given(data=st.data(), fmt=st.sampled_from(["csv", "jsonl"]))
def test_answers_bytes(world, data, fmt) -> None:
    raw = data.draw(mutated(valid_answers(world, fmt)))
    d = scratch()
    (d / f"a.{fmt}").write_bytes(raw)
    check(["verify", str(world["cal"]), "--answers", str(d / f"a.{fmt}")])
    shutil.rmtree(d)


# ---------------------------------------------------------------- fingerprint files

@given(data=st.data(), command=st.sampled_from(["verify", "inspect", "export", "calibrate", "scan"]))
def test_fingerprint_bytes(world, data, command) -> None:
    """A mutated fingerprint file is refused, or reads as exactly the original content (e.g. header padding)."""
    raw = data.draw(mutated(world["cal_bytes"], hot=4096))
    d = scratch()
    f = d / "fp.safetensors"
    f.write_bytes(raw)
    try:
        same = FingerprintSet.load(f).digest == world["fp"].digest
    except ValueError:
        same = False
    argv = {"verify": ["verify", str(f), str(world["suspect"])], "inspect": ["inspect", str(f), "--json"],
            "export": ["export", str(f), str(d / "png")],
            "calibrate": ["calibrate", str(f), "--reference", "bundled:independent-3", "bundled:other-arch",
                          "-o", str(d / "out.safetensors")],
            "scan": ["scan", "--fingerprints", str(f), "--suspects", str(world["suspect"]), "-o", str(d / "s.jsonl"),
                     "--workers", "1", "--quiet"]}[command]
    rc, _ = check(argv, invalid=not same, outputs=(d / "out.safetensors", d / "png"))
    if rc == 2:
        assert not (d / "out.safetensors").exists() and not (d / "png").exists()
    shutil.rmtree(d)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@st.composite
def forged_header(draw, header: dict) -> dict:
    """The header with 1-3 leaves replaced, deleted or added: what a forger writes, with a recomputed digest."""
    h = json.loads(json.dumps(header))
    for _ in range(draw(st.integers(1, 3))):
        node, path = h, []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            path.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        parent = h
        for k in path[:-1]:
            parent = parent[k]
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        key = path[-1] if path else draw(st.text(max_size=6))
        if action == "delete":
            parent.pop(key, None)
        elif action == "add":
            parent[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
        else:
            parent[key] = draw(JSON_VALUES)
    return h


def forge(fp: FingerprintSet, header: dict) -> bytes:
    from safetensors.torch import save

    text = _canonical(header)
    return save({"images": fp.images, "targets": fp.targets}, metadata={"charex": text,
                                                                        "digest": _digest(text, fp.images, fp.targets)})


# invalid by construction: a forged calibration or metadata that no calibrate() or generate() writes
INVALID_FORGERIES = [("calibration", "mu", -0.5), ("calibration", "mu", "0.1"), ("calibration", "s_min", 0), ("calibration", "counts", [1]),
                     ("calibration", "null", "magic"), ("calibration", "counts", [5, 999]),
                     ("calibration", "level", 1.5), ("calibration", "threshold_matches", 10**6),
                     ("calibration", "threshold_matches", 3.5), ("calibration", "references", "all"),
                     ("meta", "num_classes", 0), ("meta", "num_classes", "10"), ("meta", "input_shape", [1, 2, 3]),
                     ("meta", "classes", "airplane"), ("meta", "references", [1, 2]), ("config", "steps", -1),
                     ("config", "method", "magic"), ("config", "alpha", "big")]


@given(data=st.data(), command=st.sampled_from(["verify", "inspect", "export", "calibrate"]))
def test_fingerprint_forged_header(world, data, command) -> None:
    """A header rewritten with a matching digest: charex works with it or refuses it, never crashes."""
    fp = world["fp"]
    if data.draw(st.booleans()):
        block, key, value = data.draw(st.sampled_from(INVALID_FORGERIES))
        header = fp.header()
        header[block] = {**header[block], key: value}
        invalid = True
    else:
        header, invalid = data.draw(forged_header(fp.header())), False
    d = scratch()
    f = d / "fp.safetensors"
    f.write_bytes(forge(fp, header))
    argv = {"verify": ["verify", str(f), str(world["suspect"])], "inspect": ["inspect", str(f)],
            "export": ["export", str(f), str(d / "png")],
            "calibrate": ["calibrate", str(f), "--reference", "bundled:independent-3", "bundled:other-arch",
                          "-o", str(d / "out.safetensors")]}[command]
    check(argv, invalid=invalid, outputs=(d / "out.safetensors", d / "png"))
    shutil.rmtree(d)


# ---------------------------------------------------------------- model files and sidecar cards

@given(data=st.data())
def test_model_file_bytes(world, data) -> None:
    raw = data.draw(mutated(world["suspect_bytes"], hot=2048))
    d = scratch()
    (d / "m.safetensors").write_bytes(raw)
    check(["verify", str(world["cal"]), str(d / "m.safetensors")])
    shutil.rmtree(d)


CARD_KEYS = ["arch", "arch_kwargs", "mean", "std", "input_shape", "num_classes", "classes", "onnx"]


@given(card=st.dictionaries(st.sampled_from(CARD_KEYS) | st.text(max_size=5), JSON_VALUES, max_size=4)
       | JSON_VALUES, raw=st.none() | st.binary(max_size=64))
@example(card={"arch": "os:system", "arch_kwargs": {"command": "true"}}, raw=None)  # a card ran a shell command
@example(card={"arch": "cnn1", "arch_kwargs": {"width": 10**6}}, raw=None)  # a card asked for a huge model
def test_model_sidecar_card(world, card, raw) -> None:
    """A weights-only file with a sidecar card (JSON or raw bytes) that the suspect's owner wrote."""
    from safetensors.torch import load_file, save_file

    d = scratch()
    save_file(load_file(str(world["suspect"])), str(d / "w.safetensors"))
    side = d / "w.json"
    side.write_bytes(raw) if raw is not None else side.write_text(json.dumps(card))
    check(["verify", str(world["cal"]), str(d / "w.safetensors")])
    shutil.rmtree(d)


# ---------------------------------------------------------------- Hugging Face model folders

HF_CONFIG = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": 32, "patch_size": 8,
             "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
             "num_labels": 10}
HF_PRE = {"do_normalize": True, "do_rescale": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
          "rescale_factor": 1 / 255, "size": {"height": 32, "width": 32}}
HF_KEYS = sorted(set(HF_CONFIG) | set(HF_PRE) | {"auto_map", "id2label", "num_channels", "crop_size",
                                                 "do_center_crop", "dtype", "hidden_act"})


@given(config=st.dictionaries(st.sampled_from(HF_KEYS) | st.text(max_size=5), JSON_VALUES, max_size=3),
       pre=st.dictionaries(st.sampled_from(HF_KEYS), JSON_VALUES, max_size=3) | st.none(),
       raw=st.none() | st.binary(max_size=64), which=st.sampled_from(["config.json", "preprocessor_config.json"]))
@example(config={"auto_map": {"AutoModelForImageClassification": "evil.Evil"}}, pre={}, raw=None, which="config.json")
@example(config={"hidden_size": 4096, "intermediate_size": 16384, "num_attention_heads": 16}, pre={}, raw=None,
         which="config.json")
def test_hf_folder(world, config, pre, raw, which) -> None:
    """A Hugging Face model folder whose config.json and preprocessor_config.json the suspect's owner wrote."""
    transformers = pytest.importorskip("transformers")
    d = scratch()
    torch.manual_seed(0)
    transformers.ViTForImageClassification(transformers.ViTConfig(**HF_CONFIG)).save_pretrained(d / "m")
    (d / "m" / "config.json").write_text(json.dumps({**HF_CONFIG, **config}))
    if pre is not None:
        (d / "m" / "preprocessor_config.json").write_text(json.dumps({**HF_PRE, **pre}))
    if raw is not None:
        (d / "m" / which).write_bytes(raw)
    check(["verify", str(world["cal"]), str(d / "m")])
    shutil.rmtree(d)


# ---------------------------------------------------------------- scan lists and a resumed scan's output

@given(listing=st.binary(max_size=200) | st.lists(st.sampled_from(["bundled:base", "bundled:nope", "", "#c", "x.pt",
                                                                    "../", "\x00", "bundled:", "/dev/null"]),
                                                    max_size=5).map(lambda xs: "\n".join(xs).encode()),
       previous=st.none() | st.binary(max_size=200))
def test_scan_list_and_previous_output(world, listing, previous) -> None:
    d = scratch()
    (d / "list.txt").write_bytes(listing)
    out = d / "scan.jsonl"
    if previous is not None:
        out.write_bytes(previous)
    rc, _ = check(["scan", "--fingerprints", str(world["cal"]), "--suspects", str(d / "list.txt"), "-o", str(out),
                   "--workers", "1", "--quiet"])
    if rc == 0:  # the output (resumed or new) is whole JSON lines
        for line in out.read_bytes().decode().splitlines():
            json.loads(line)
    elif previous is not None:  # a failed scan leaves what was there
        assert out.read_bytes() == previous
    shutil.rmtree(d)
