import copy
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as tprune

from charex.data.cifar10 import ArrayDataset
from charex.derive import cast_weights, prune_masks, prune_model, quantize_int8, sparsity
from charex.derive.prune import prunable_weights
from charex.errors import CharexError
from charex import load_model
from charex.models import build_arch, save_model, state_digest
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


def _syn(n: int, seed: int) -> ArrayDataset:
    x, y = synthetic_data(n, seed)
    return ArrayDataset((x * 255).round().to(torch.uint8), y, tuple(map(str, range(10))), f"syn{seed}")


def test_sparsity_schedule() -> None:
    from charex.derive.prune import sparsity_schedule

    assert sparsity_schedule(0.5) == [0.5]
    assert sparsity_schedule(0.95) == [0.5, 0.8, 0.9, 0.95]
    assert sparsity_schedule(0.85) == [0.5, 0.8, 0.85]


def test_prune_until_useful_rounds_global_masks_and_stop() -> None:
    from charex.derive.prune import prune_until_useful

    base = make_tiny(0, train_steps=40)
    before = state_digest(base)
    data, test = _syn(256, 0), _syn(128, 1)
    pruned, stats = prune_until_useful(base, 0.9, data=data, test=test, tolerance=1.0, max_extra_epochs=2)
    assert state_digest(base) == before
    assert [r["sparsity"] for r in stats["rounds"]] == [0.5, 0.8, 0.9] and stats["extra_epochs"] == 0
    assert abs(sparsity(pruned) - 0.9) < 0.005 and stats["within_tolerance"]
    # global scope: layers end at different sparsities; weights pruned in the first round stay zero
    per_layer = [float((w == 0).float().mean()) for w in prunable_weights(pruned).values()]
    assert max(per_layer) - min(per_layer) > 0.05
    first = prune_masks(base, 0.5, "global")
    assert all(torch.all(w[first[n] == 0] == 0) for n, w in prunable_weights(pruned).items())
    assert pruned.card["lineage"].endswith("|prune-iter(global,0.9,ft=1,tol=1,data=train,seed=0)")
    assert pruned.card["test_accuracy"] == stats["accuracy"]
    # an unreachable tolerance spends the extra epochs and says so
    _, stats = prune_until_useful(base, 0.5, data=data, test=test, tolerance=-1.0, max_extra_epochs=2)
    assert stats["extra_epochs"] == 2 and not stats["within_tolerance"] and len(stats["rounds"]) == 3


def _spy_on_training(monkeypatch, distill) -> dict:
    """What distill hands to training (the student's data, config, soft targets), recorded on every call."""
    seen: dict = {}
    real = distill.train_from_scratch

    def spy(arch, kw, seed, train, test, cfg, **options):
        seen.update(labels=train.labels.clone(), images=train.images.clone(), cfg=cfg,
                    soft=options.get("soft_targets"), temperature=options.get("temperature"))
        return real(arch, kw, seed, train, test, cfg, **options)

    monkeypatch.setattr(distill, "train_from_scratch", spy)
    return seen


def test_distill_trains_a_fresh_student_on_the_teachers_answers(monkeypatch) -> None:
    """Labels: the teacher's top-1; probabilities: softmax(logits / T) with T^2 KL; a query budget: a subset."""
    import charex.derive.distill as distill
    from charex.judge.verify import batch_logits, predict

    teacher = make_tiny(0, train_steps=40)
    teacher.card["lineage"] = "tiny(seed=0)"
    data = _syn(64, 2)
    seen = _spy_on_training(monkeypatch, distill)
    student, stats = distill.distill_model(teacher, data, arch="tiny", arch_kwargs={"width": 4}, epochs=1, seed=3,
                                           data_name="half-b")
    assert torch.equal(seen["labels"], predict(teacher, data.images.float() / 255)) and seen["soft"] is None
    assert student.card["lineage"] == "tiny(seed=0)|distill(tiny,ep=1,data=half-b,seed=3)"
    assert student.card["parent"] == "tiny(seed=0)" and 0 <= stats["teacher_label_accuracy"] <= 1
    assert student.card["distill"]["answers"] == "labels" and stats["queries"] == 64

    student, stats = distill.distill_model(teacher, data, arch="tiny", arch_kwargs={"width": 4}, epochs=1, seed=3,
                                           data_name="half-b", temperature=4.0, queries=40)
    assert len(seen["images"]) == 40 and stats["queries"] == 40
    want = torch.softmax(batch_logits(teacher, seen["images"].float() / 255) / 4.0, 1)
    assert torch.allclose(seen["soft"], want) and seen["temperature"] == 4.0
    assert student.card["lineage"] == "tiny(seed=0)|distill(tiny,ep=1,data=half-b,seed=3,T=4,q=40)"
    assert student.card["distill"]["answers"] == "probabilities" and load_model(save_model(
        student, Path(tempfile.mkdtemp()) / "s.safetensors")).card["distill"]["temperature"] == 4.0
    with pytest.raises(CharexError, match="query budget"):
        distill.distill_model(teacher, data, arch="tiny", arch_kwargs={}, epochs=1, queries=65)


def test_stronger_thieves_noise_smoothing_and_mixup(monkeypatch) -> None:
    """Label noise flips about that share of the answers to another class; smoothing reaches the loss; mixup sends
    mixes of two of the thief's images (each pixel between the two) and trains on the teacher's answers to them."""
    import charex.derive.distill as distill
    from charex.judge.verify import predict

    teacher = make_tiny(0, train_steps=40)
    teacher.card["lineage"] = "tiny(seed=0)"
    data = _syn(400, 2)
    seen = _spy_on_training(monkeypatch, distill)
    honest = predict(teacher, data.images.float() / 255)
    student, _ = distill.distill_model(teacher, data, arch="tiny", arch_kwargs={"width": 4}, epochs=1, seed=3,
                                       data_name="half-b", label_noise=0.25, label_smoothing=0.3)
    flipped = (seen["labels"] != honest).float().mean().item()
    assert 0.17 < flipped < 0.33 and seen["cfg"].label_smoothing == 0.3
    assert student.card["lineage"] == "tiny(seed=0)|distill(tiny,ep=1,data=half-b,seed=3,noise=0.25,ls=0.3)"
    distill.distill_model(teacher, data, arch="tiny", arch_kwargs={"width": 4}, epochs=1, seed=3, temperature=2.0,
                          label_noise=0.25)
    noisy = seen["labels"] != honest
    assert torch.equal(seen["soft"][noisy], torch.nn.functional.one_hot(seen["labels"][noisy], 10).float())
    student, _ = distill.distill_model(teacher, data, arch="tiny", arch_kwargs={"width": 4}, epochs=1, seed=3,
                                       data_name="half-b", temperature=4.0, transfer="mixup")
    mixed = seen["images"]
    assert not torch.equal(mixed, data.images) and mixed.shape == data.images.shape
    assert torch.equal(seen["labels"], predict(teacher, mixed.float() / 255))
    assert student.card["distill"]["transfer"] == "mixup" and "transfer=mixup" in student.card["lineage"]
    for bad in ({"label_noise": 1.0}, {"transfer": "webcrawl"}):
        with pytest.raises(CharexError):
            distill.distill_model(teacher, data, arch="tiny", arch_kwargs={}, epochs=1, **bad)


def test_soft_target_loss_is_t2_kl() -> None:
    """One SGD step on soft targets moves the weights as the hand-written T^2 KL loss's gradient says."""
    from charex.train import TrainConfig, train_model

    data = _syn(32, 4)
    soft = torch.softmax(torch.randn(32, 10, generator=torch.Generator().manual_seed(0)), 1)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.1, momentum=0.5, weight_decay=0.0, warmup=1.0, crop_padding=0,
                      label_smoothing=0.0, dtype="float32")
    a, b = make_tiny(5), make_tiny(5)
    a.train()  # the reference step by hand, on the same (unflipped) batch order
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(32, generator=gen)
    from charex.train import augment

    x = augment(data.images[perm].float() / 255, 0, gen)
    out = a(x)
    loss = 3.0 ** 2 * torch.sum(soft[perm] * (soft[perm].log() - torch.log_softmax(out / 3.0, 1))) / 32
    loss.backward()
    with torch.no_grad():
        want = {n: p - 0.1 * 1.5 * p.grad for n, p in a.named_parameters()}  # Nesterov's first step: (1 + m) g
    train_model(b, data, cfg, soft_targets=soft, temperature=3.0, progress=False)
    for n, p in b.named_parameters():
        assert torch.allclose(p, want[n], atol=1e-5), n


def test_prune_chain_equals_separate_calls() -> None:
    from charex.derive.prune import prune_chain, prune_until_useful

    base = make_tiny(0, train_steps=40)
    data, test = _syn(128, 0), _syn(64, 1)
    chain = prune_chain(base, [0.8, 0.5], data=data, test=test, tolerance=-1.0, max_extra_epochs=1, seed=2)
    for (m, stats), ratio in zip(chain, [0.8, 0.5]):
        alone, alone_stats = prune_until_useful(base, ratio, data=data, test=test, tolerance=-1.0, max_extra_epochs=1,
                                                seed=2)
        assert state_digest(m) == state_digest(alone) and stats == alone_stats
        assert m.card["lineage"] == alone.card["lineage"]
