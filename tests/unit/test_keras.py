"""Keras models without TensorFlow (charex.models.keras, `charex import-keras`): a Keras 2 HDF5 file written here in
Keras' own layout, rebuilt, and checked against a NumPy forward pass in Keras' channels-last convention (TensorFlow's
asymmetric `same` padding, max pooling padded with -inf, Flatten in H, W, C order, a final softmax dropped)."""

import json
import math

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from charex.cli import main  # noqa: E402
from charex.errors import CharexError  # noqa: E402
from charex.models import load_model  # noqa: E402
from charex.models.keras import read_keras  # noqa: E402

LAYERS = [
    ("InputLayer", {"name": "input", "batch_input_shape": [None, 9, 9, 3]}),
    ("Conv2D", {"name": "conv2d", "filters": 4, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                "dilation_rate": [1, 1], "activation": "relu", "use_bias": True, "data_format": "channels_last"}),
    ("BatchNormalization", {"name": "bn", "axis": [3], "epsilon": 0.001, "center": True, "scale": True}),
    ("MaxPooling2D", {"name": "pool", "pool_size": [2, 2], "strides": [2, 2], "padding": "same"}),
    ("Conv2D", {"name": "conv2d_1", "filters": 5, "kernel_size": [2, 2], "strides": [1, 1], "padding": "valid",
                "dilation_rate": [1, 1], "activation": "linear", "use_bias": False}),
    ("Flatten", {"name": "flatten"}),
    ("Dense", {"name": "dense", "units": 7, "activation": "relu", "use_bias": True}),
    ("Dropout", {"name": "dropout", "rate": 0.3}),
    ("Dense", {"name": "dense_1", "units": 3, "activation": "softmax", "use_bias": True}),
]


def _weights(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    f = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    return {"conv2d": {"kernel": f(3, 3, 3, 4), "bias": f(4)},
            "bn": {"gamma": 1 + f(4), "beta": f(4), "moving_mean": f(4), "moving_variance": 0.5 + np.abs(f(4))},
            "conv2d_1": {"kernel": f(2, 2, 4, 5)},
            "dense": {"kernel": f(20, 7), "bias": f(7)},  # 9 -> 5 (conv, stride 2) -> 3 (pool) -> 2: 2 x 2 x 5
            "dense_1": {"kernel": f(7, 3), "bias": f(3)}}


def write_h5(path, weights, layers=LAYERS, config: bool = True, class_name: str = "Sequential") -> None:
    with h5py.File(path, "w") as f:
        if config:
            f.attrs["model_config"] = json.dumps({"class_name": class_name, "config": {
                "name": "m", "layers": [{"class_name": c, "config": cfg} for c, cfg in layers]}})
        f.attrs["keras_version"] = "2.9.0"
        f.attrs["backend"] = "tensorflow"
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [cfg["name"].encode() for _, cfg in layers]
        for _, cfg in layers:
            lg = g.create_group(cfg["name"])
            names = [f"{cfg['name']}/{k}:0" for k in weights.get(cfg["name"], {})]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, (k, v) in zip(names, weights.get(cfg["name"], {}).items()):
                lg.create_dataset(n, data=v)


def _same_pad(x: np.ndarray, k: int, s: int, fill: float) -> np.ndarray:
    n = x.shape[1]
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    lo, hi = total // 2, total - total // 2
    return np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), constant_values=fill)


def _conv(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:  # NHWC, valid, kernel kh, kw, in, out
    k = w.shape[0]
    h = (x.shape[1] - k) // s + 1
    out = np.zeros((x.shape[0], h, h, w.shape[3]))
    for i in range(h):
        for j in range(h):
            out[:, i, j] = np.einsum("nabc,abcd->nd", x[:, i * s:i * s + k, j * s:j * s + k], w)
    return out


def reference(x: np.ndarray, w: dict) -> np.ndarray:
    """The Keras model's pre-softmax scores on NHWC ``x``, written from Keras' definitions."""
    y = np.maximum(_conv(_same_pad(x, 3, 2, 0.0), w["conv2d"]["kernel"], 2) + w["conv2d"]["bias"], 0)
    bn = w["bn"]
    y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"]
    y = _same_pad(y, 2, 2, -np.inf)
    h = y.shape[1] // 2
    y = y[:, :2 * h, :2 * h].reshape(len(y), h, 2, h, 2, -1).max((2, 4))
    y = _conv(y, w["conv2d_1"]["kernel"], 1)
    y = y.reshape(len(y), -1)  # H, W, C order
    y = np.maximum(y @ w["dense"]["kernel"] + w["dense"]["bias"], 0)
    return y @ w["dense_1"]["kernel"] + w["dense_1"]["bias"]


def test_rebuilt_model_matches_keras_semantics(tmp_path) -> None:
    w = _weights(np.random.default_rng(0))
    write_h5(tmp_path / "m.h5", w)
    net, card = read_keras(tmp_path / "m.h5")
    assert card["arch"] == "keras" and card["input_shape"] == [3, 9, 9] and card["num_classes"] == 3
    x = np.random.default_rng(1).random((4, 9, 9, 3)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(got, reference(x.astype(np.float64), w), rtol=1e-4, atol=1e-4)


def test_import_keras_writes_a_model_every_command_loads(tmp_path, capsys) -> None:
    w = _weights(np.random.default_rng(2))
    write_h5(tmp_path / "m.h5", w)
    out = tmp_path / "m.safetensors"
    assert main(["import-keras", str(tmp_path / "m.h5"), "-o", str(out), "--data", str(tmp_path / "none")]) == 0
    m = load_model(out)  # no --arch: the card names the registry architecture keras
    x = torch.rand(2, 3, 9, 9)
    with torch.no_grad():  # 0-255 by default: the Keras model sees raw pixel values
        want = reference((x * 255).permute(0, 2, 3, 1).double().numpy(), w)
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-3, atol=1e-3)
    q = tmp_path / "q.safetensors"
    assert main(["derive", "quantize", str(out), "--to", "float16", "-o", str(q)]) == 0
    assert load_model(q).card["lineage"].startswith("keras(m.h5)|")


def test_what_cannot_be_rebuilt_is_named(tmp_path) -> None:
    w = _weights(np.random.default_rng(3))
    write_h5(tmp_path / "weights.h5", w, config=False)
    with pytest.raises(CharexError, match="weights only"):
        read_keras(tmp_path / "weights.h5")
    write_h5(tmp_path / "func.h5", w, class_name="Functional")
    with pytest.raises(CharexError, match="Sequential"):
        read_keras(tmp_path / "func.h5")
    odd = [*LAYERS[:2], ("LSTM", {"name": "lstm"}), *LAYERS[2:]]
    write_h5(tmp_path / "lstm.h5", w, layers=odd)
    with pytest.raises(CharexError, match="LSTM is not supported"):
        read_keras(tmp_path / "lstm.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CharexError, match="not a Keras HDF5"):
        read_keras(tmp_path / "junk.h5")


def test_an_untrusted_config_cannot_make_charex_allocate(tmp_path) -> None:
    from charex.models.keras import KerasSequential

    huge = [{"type": "flatten"}, {"type": "dense", "units": 4096, "activation": "relu"}]
    with pytest.raises(CharexError, match="parameters; refused"):
        KerasSequential(huge, [4096, 4096, 64])
    with pytest.raises(CharexError, match="unknown layer type"):
        KerasSequential([{"type": "lambda"}], [3, 8, 8])
