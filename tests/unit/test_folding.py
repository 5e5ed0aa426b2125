import torch
from torch.func import functional_call

from charex.make.folding import BNFolder, conv_bn_pairs
from charex.make.gradients import ModelForward
from charex.models import NORMALIZATIONS, Normalized, build_arch


def _bn_model(seed=0):
    torch.manual_seed(seed)
    m = Normalized(build_arch("cnn1", width=0.125), *NORMALIZATIONS["cifar10"])
    for mod in m.modules():  # non-trivial running statistics and affine parameters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_finds_all_13_pairs() -> None:
    assert len(conv_bn_pairs(_bn_model())) == 13


def test_folded_equals_unfolded_with_noise() -> None:
    m = _bn_model()
    folder = BNFolder(m)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    m64 = m.double()
    folder64 = BNFolder(m64)
    g = torch.Generator().manual_seed(0)
    params = {n: p.detach() + torch.empty_like(p).uniform_(-0.03, 0.03, generator=g) for n, p in m64.named_parameters()}
    ref = functional_call(m64, params, (x,))
    got = functional_call(folder64.module, folder64.fold(params), (x,))
    assert torch.allclose(ref, got, atol=1e-10)
    assert folder.active


def test_model_forward_gradients_match_with_and_without_folding() -> None:
    m = _bn_model(1)
    x = torch.rand(6, 3, 32, 32)
    y = torch.randint(10, (6,))
    a = ModelForward(m, delta=0.02, generator=torch.Generator().manual_seed(3), fold_bn=True)
    b = ModelForward(m, delta=0.02, generator=torch.Generator().manual_seed(3), fold_bn=False)
    ga, gb = a.input_gradient(x, y, 3), b.input_gradient(x, y, 3)
    assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6 * gb.abs().max())
    assert torch.allclose(a.loss(x, y), b.loss(x, y), atol=1e-5)
