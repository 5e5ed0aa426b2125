import numpy as np
import pytest
import scipy.fft
import torch

from charex.errors import CharexError
from charex.make.frequency import dct2, dct_matrix, highpass, highpass_mask, idct2


@pytest.mark.parametrize("h,w", [(32, 32), (8, 12), (1, 5), (224, 224)])
def test_dct_matches_scipy(h: int, w: int) -> None:
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct2(x).numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(idct2(dct2(x)).numpy(), x.numpy(), atol=1e-10)
    np.testing.assert_allclose(idct2(x).numpy(), scipy.fft.idctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1)),
                               atol=1e-10)


def test_dct_matrix_orthonormal() -> None:
    d = dct_matrix(17, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(17, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 20])
def test_highpass_zeroes_exactly_the_band(k: int) -> None:
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    y = highpass(x, k)
    c_in = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    c_out = scipy.fft.dctn(y.numpy(), type=2, norm="ortho", axes=(-2, -1))
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    band = (i + j >= 1) & (i + j <= k)
    assert np.abs(c_out[..., band]).max(initial=0) < 1e-10
    np.testing.assert_allclose(c_out[..., ~band], c_in[..., ~band], atol=1e-10)  # DC and the rest kept
    np.testing.assert_allclose(highpass(y, k).numpy(), y.numpy(), atol=1e-10)  # a projection


def test_highpass_mask_counts() -> None:
    m = highpass_mask(224, 224, 20)
    assert int((m == 0).sum()) == sum(s + 1 for s in range(1, 21))  # number of (i, j) with 1 <= i+j <= 20
    assert m[0, 0] == 1


@pytest.mark.parametrize("k", [-1, 63, 2.5])
def test_highpass_rejects_bad_k(k: object) -> None:
    with pytest.raises(CharexError, match="band k"):
        highpass(torch.rand(1, 3, 32, 32), k)  # type: ignore[arg-type]


def test_highpass_rejects_bad_shape() -> None:
    with pytest.raises(CharexError, match="N x C x H x W"):
        highpass(torch.rand(3, 32, 32), 1)
