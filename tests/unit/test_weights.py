"""The weight test (charex.judge.weights, `charex weights`): the edits that cost a thief nothing (a consistent
permutation of hidden units, BatchNorm folded, a renamed state dict in float16, a new head for another task,
int8) leave the base's units found; independent models of the same recipe, students and degenerate weights are not
claimed; another architecture is "not applicable"."""

import copy

import pytest
import torch

from charex import load_model
from charex.cli import main
from charex.derive import permute_units, quantize_int8
from charex.errors import CharexError
from charex.judge.weights import calibrate_weights, layer_weights, weight_score

SEEDS = ("independent-1", "independent-2", "independent-3")


@pytest.fixture(scope="module")
def base():
    return load_model("bundled:base")


@pytest.fixture(scope="module")
def null(base):
    return calibrate_weights(base, {n: load_model(f"bundled:{n}") for n in SEEDS})


def permuted(m, seed: int = 0):
    """A thief's consistent permutation of every hidden unit (charex.derive.permute_units)."""
    return permute_units(m, seed)


def test_free_edits_keep_the_units(base, null) -> None:
    x = torch.rand(4, 3, 32, 32)
    thief = permuted(base)
    with torch.no_grad():
        assert torch.allclose(base(x), thief(x), atol=1e-4)  # the same function, every unit moved
    folded = copy.deepcopy(thief)
    for i, bn in enumerate(folded.model.features):
        if isinstance(bn, torch.nn.BatchNorm2d):  # BatchNorm's scale folded into the convolution before it
            conv = folded.model.features[i - 1]
            conv.weight.data *= (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1, 1)
    renamed = {f"layer{i}": v.half() for i, v in enumerate(thief.model.state_dict().values())}
    head = copy.deepcopy(thief)
    head.model.classifier[4] = torch.nn.Linear(head.model.classifier[4].in_features, 100)  # another task
    for name, m in (("permuted", thief), ("folded", folded), ("renamed float16", renamed), ("new head", head),
                    ("int8", quantize_int8(base))):
        s = weight_score(base, m)
        assert s.statistic > 0.99 and not s.skipped and null.p_value(s) < 1e-4, name


def test_independents_students_and_degenerate_weights_are_not_claimed(base) -> None:
    for held in SEEDS:  # each seed of the recipe against a null of the other two
        others = calibrate_weights(base, {n: load_model(f"bundled:{n}") for n in SEEDS if n != held})
        assert others.p_value(weight_score(base, load_model(f"bundled:{held}"))) > 0.05, held
    full = calibrate_weights(base, {n: load_model(f"bundled:{n}") for n in SEEDS})
    assert full.p_value(weight_score(base, load_model("bundled:derived-student"))) > 0.5  # never saw the weights
    state = base.model.state_dict()
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    flat = {k: torch.ones_like(v) for k, v in state.items()}  # every unit the same vector
    noise = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) if v.is_floating_point() else v
             for k, v in state.items()}
    for name, m in (("zeros", zeros), ("constant", flat), ("random", noise)):
        assert full.p_value(weight_score(base, m)) > 0.5, name
    assert weight_score(base, load_model("bundled:derived-pruned90")).statistic > 0.6


def test_another_architecture_is_not_applicable(base, null) -> None:
    s = weight_score(base, load_model("bundled:reference-plain"))
    assert not s.applicable and null.p_value(s) is None and s.skipped
    with pytest.raises(CharexError, match="two or more"):
        calibrate_weights(base, {"plain": load_model("bundled:reference-plain"),
                                 "i1": load_model("bundled:independent-1")})


def test_weights_command(capsys) -> None:
    cal = ["--calibration", *(f"bundled:{n}" for n in SEEDS)]
    assert main(["weights", "bundled:base", "bundled:derived-pruned90", *cal]) == 0
    assert "DERIVED" in capsys.readouterr().out
    assert main(["weights", "bundled:base", "bundled:derived-student", *cal]) == 1
    assert main(["weights", "bundled:base", "bundled:reference-plain", *cal]) == 3
    assert "NOT APPLICABLE" in capsys.readouterr().out


def test_an_onnx_file_in_an_app(base, null, tmp_path) -> None:
    """A permuted copy exported to ONNX (BatchNorm folded into the convolutions by the exporter) is read from its
    initializers, nothing run."""
    pytest.importorskip("onnx")
    from charex.models.onnx import export_onnx

    export_onnx(permuted(base, seed=3), tmp_path / "app.onnx", (3, 32, 32))
    s = weight_score(base, load_model(tmp_path / "app.onnx"))
    assert s.statistic > 0.99 and null.p_value(s) < 1e-4


def test_positive_rescaling_across_a_relu(base, null) -> None:
    """Each hidden unit of the classifier's first layer scaled by a > 0 and its outgoing weights by 1/a: the same
    function, the same units found."""
    thief = copy.deepcopy(permuted(base, seed=5))
    first, second = thief.model.classifier[0], thief.model.classifier[2]
    a = torch.exp(torch.randn(first.out_features, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        x = torch.rand(4, 3, 32, 32)
        want = thief(x)
        first.weight *= a[:, None]
        first.bias *= a
        second.weight /= a[None, :]
        assert torch.allclose(thief(x), want, atol=1e-4)
    s = weight_score(base, thief)
    assert s.statistic > 0.99 and null.p_value(s) < 1e-4


def test_broken_weights_are_an_error_not_a_verdict(base, tmp_path, capsys) -> None:
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    state["features.3.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CharexError, match="NaN or inf"):
        weight_score(base, state)
    with pytest.raises(CharexError, match="empty model"):
        weight_score(base, {})
    bad = copy.deepcopy(base)
    bad.model.load_state_dict(state)
    from charex.models import save_model

    save_model(bad, tmp_path / "bad.safetensors")
    assert main(["weights", "bundled:base", str(tmp_path / "bad.safetensors"), "--calibration",
                 *(f"bundled:{n}" for n in SEEDS)]) == 2
    assert "NaN or inf" in capsys.readouterr().err


def test_the_kits_sketch_keeps_the_verdicts_and_not_the_base(base) -> None:
    """The kit's sketch (WeightSketch): at most half of each unit's directions; copies found in it as in the full
    weights, and other seeds not claimed by a null fitted in the same sketch."""
    from charex.judge.weights import WeightSketch

    sk = WeightSketch.of(base)
    full = [w for _, w in layer_weights(base)][:-1]
    assert [t.shape[0] for _, _, t in sk.layers] == [w.shape[0] for w in full]
    assert all(2 * m <= w[0].numel() for m, w in zip(sk.dims, full))
    assert sum(t.numel() for _, _, t in sk.layers) < 0.2 * sum(w.numel() for w in full)
    assert WeightSketch.of(base).layers[3][2].equal(sk.layers[3][2])  # deterministic from the base and the seed
    null = calibrate_weights(sk, {n: load_model(f"bundled:{n}") for n in SEEDS[:2]} |
                             {"i3": load_model("bundled:independent-3")})
    for name, m in (("permuted", permuted(base)), ("pruned90", load_model("bundled:derived-pruned90"))):
        assert null.p_value(weight_score(sk, m)) < 1e-3, name
    assert null.p_value(weight_score(sk, load_model("bundled:independent-4"))) > 0.05  # a seed in no role
    assert null.p_value(weight_score(sk, load_model("bundled:derived-student"))) > 0.05


def test_residual_networks_and_transformers_line_up_under_a_thiefs_permutation() -> None:
    """Skip connections and attention: each layer reads the order of the latest layer of its input width (the
    stream's last writer; the value third of a fused query-key-value projection), so a consistent permutation of
    a ResNet's streams and hidden units, or of a ViT's token width and MLP units, is undone."""
    from charex.models import Normalized
    from charex.models.architectures import build_arch

    x = torch.rand(4, 3, 32, 32)
    for arch, kw in (("resnet", {"blocks": 2}), ("vit", {"depth": 2})):
        nets = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            nets.append(Normalized(build_arch(arch, **kw), (0.5,) * 3, (0.25,) * 3, {"arch": arch}).eval())
        base, other = nets
        thief = permute_units(base)
        with torch.no_grad():
            assert torch.allclose(base(x), thief(x), atol=1e-4), arch  # the same function, every unit moved
        s = weight_score(base, thief)
        assert s.statistic > 0.99 and not s.skipped, (arch, s.to_dict())
        assert weight_score(base, other).statistic < 0.5 and weight_score(base, other).applicable
