"""framestream.utils.conv.conv3d: F.conv3d's values, through oneDNN on eager fp32 CPU tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.modules import CausalConv3d, ChunkRun
from framestream.utils.conv import conv3d

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


class _Ops(TorchDispatchMode):
    """Names of the aten ops dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "shape, out_channels, kernel, stride, padding, bias",
    [
        ((1, 8, 4, 10, 12), 16, (3, 3, 3), 1, (0, 1, 1), True),  # under PyTorch's native-kernel rule
        ((2, 4, 3, 9, 7), 6, (3, 1, 1), (1, 1, 1), 0, False),
        ((1, 6, 5, 11, 11), 4, (3, 3, 3), (2, 2, 2), (1, 1, 1), True),
        ((1, 3, 2, 8, 8), 5, (1, 1, 1), 1, 0, True),
        ((1, 32, 6, 40, 40), 8, (3, 3, 3), 1, (0, 1, 1), True),  # above it: oneDNN either way
    ],
)
def test_conv3d_equals_torch(shape, out_channels, kernel, stride, padding, bias) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(out_channels, shape[1], *kernel, generator=g) / (shape[1] * kernel[0] * kernel[1] * kernel[2]) ** 0.5
    b = torch.randn(out_channels, generator=g) if bias else None
    ours = conv3d(x, w, b, stride, padding)
    ref = F.conv3d(x, w, b, stride, padding)
    assert ours.shape == ref.shape and ours.is_contiguous()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_conv3d_gradients_match_torch() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 4, 6, 6, generator=g, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, 3, generator=g, requires_grad=True)
    conv3d(x, w, None, 1, (0, 1, 1)).square().sum().backward()
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    F.conv3d(x, w, None, 1, (0, 1, 1)).square().sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_causal_chunk_conv_runs_on_onednn_unless_switched_off() -> None:
    """A 2-frame chunk of 16 channels falls under PyTorch's rule (1*16*4*12 <= 20480): the
    causal conv still reaches oneDNN, and falls back to torch's choice when oneDNN is off."""
    conv = CausalConv3d(16, 16, 3, padding=1)
    torch.nn.init.normal_(conv.weight, std=0.05)
    torch.nn.init.zeros_(conv.bias)
    x = torch.randn(1, 16, 2, 12, 12)
    with torch.no_grad():
        with _Ops() as ops:
            fast = conv(x, ChunkRun(WanCausalCache(), num_padded=0, atomic=False))
        assert "mkldnn_convolution" in ops.names and "convolution" not in ops.names
        with torch.backends.mkldnn.flags(enabled=False), _Ops() as ops:
            slow = conv(x, ChunkRun(WanCausalCache(), num_padded=0, atomic=False))
        assert "mkldnn_convolution" not in ops.names
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_meta_tensors_keep_torch_conv3d() -> None:
    """Shape propagation on the meta device (used by the receptive-field and memory planners)."""
    x = torch.empty(1, 8, 4, 10, 10, device="meta")
    w = torch.empty(8, 8, 3, 3, 3, device="meta")
    assert conv3d(x, w, None, 1, (0, 1, 1)).shape == (1, 8, 2, 10, 10)
