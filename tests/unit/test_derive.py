import copy

import pytest
import torch
import torch.nn.utils.prune as tprune

from charex.data.cifar10 import ArrayDataset
from charex.derive import cast_weights, prune_masks, prune_model, quantize_int8, sparsity
from charex.derive.prune import prunable_weights
from charex.errors import CharexError
from charex.models import build_arch, state_digest
from conftest import make_tiny, synthetic_data


@pytest.mark.parametrize("ratio", [0.5, 0.8, 0.9, 0.95])
def test_layer_masks_match_torch_prune(ratio) -> None:
    torch.manual_seed(0)
    m = build_arch("cnn1", width=0.125)
    ours = prune_masks(m, ratio, "layer")
    ref = copy.deepcopy(m)
    for name, mod in ref.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            tprune.l1_unstructured(mod, "weight", amount=ratio)
            assert torch.equal(ours[f"{name}.weight"], mod.weight_mask), name


@pytest.mark.parametrize("ratio", [0.8, 0.95])
def test_global_masks_match_torch_prune(ratio) -> None:
    torch.manual_seed(1)
    m = build_arch("cnn1", width=0.125)
    ours = prune_masks(m, ratio, "global")
    ref = copy.deepcopy(m)
    mods = [(mod, "weight") for mod in ref.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    tprune.global_unstructured(mods, pruning_method=tprune.L1Unstructured, amount=ratio)
    names = [n for n, mod in ref.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    for n, (mod, _) in zip(names, mods):
        assert torch.equal(ours[f"{n}.weight"], mod.weight_mask), n


def test_finetune_keeps_pruned_weights_zero() -> None:
    base = make_tiny(0, train_steps=20)
    before = state_digest(base)
    x, y = synthetic_data(256)
    data = ArrayDataset((x * 255).round().to(torch.uint8), y, tuple(map(str, range(10))), "syn")
    pruned, stats = prune_model(base, 0.9, scope="layer", finetune_epochs=2, data=data, seed=3)
    assert state_digest(base) == before  # original untouched
    masks = prune_masks(base, 0.9, "layer")
    for name, w in prunable_weights(pruned).items():
        assert torch.all(w[masks[name] == 0] == 0), name
    assert abs(sparsity(pruned) - 0.9) < 0.01 and stats["sparsity"] == sparsity(pruned)
    assert pruned.card["lineage"].endswith("|prune(layer,0.9,ft=2,seed=3)")
    # fine-tuning changed the surviving weights
    assert any(not torch.equal(w, prunable_weights(base)[n] * masks[n]) for n, w in prunable_weights(pruned).items())


def test_prune_rejects_bad_input() -> None:
    with pytest.raises(CharexError, match="ratio"):
        prune_masks(make_tiny(0), 1.2)
    with pytest.raises(CharexError, match="scope"):
        prune_masks(make_tiny(0), 0.5, "channel")
    with pytest.raises(CharexError, match="training data"):
        prune_model(make_tiny(0), 0.5, finetune_epochs=1)


def test_quantize_int8_grid_and_casts() -> None:
    m = make_tiny(0)
    q = quantize_int8(m)
    for n, w in prunable_weights(q).items():
        scale = prunable_weights(m)[n].abs().flatten(1).amax(1) / 127
        steps = w.flatten(1) / scale[:, None]
        assert torch.allclose(steps, steps.round(), atol=1e-3)
    h = cast_weights(m, "float16")
    assert all(torch.equal(p, p.half().float()) for p in h.parameters())
    assert q.card["lineage"].endswith("|quantize(int8)")
