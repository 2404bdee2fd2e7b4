"""U-Net: shapes, size validation, parameter counts by hand (with and without skips), and that it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cs_dense.models import UNet, UNetConfig
from cs_dense.train import fit


@pytest.mark.parametrize(("depth", "size"), [(1, (6, 10)), (2, (12, 8)), (3, (64, 40)), (4, (16, 32))])
@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
@pytest.mark.parametrize("skip", [True, False])
def test_output_has_the_input_size(device, depth, size, upsample, skip):
    model = UNet(UNetConfig(in_channels=2, num_classes=5, depth=depth, width=4, upsample=upsample, skip=skip)).to(device)
    out = model(torch.randn(3, 2, *size, device=device))
    assert out.shape == (3, 5, *size) and out.device.type == device


@pytest.mark.parametrize(("size", "message"), [
    ((60, 64), r"multiples of 8; got 60 x 64. Nearest valid heights: \[56, 64\], widths: \[64, 72\]"),
    ((4, 8), r"got 4 x 8. Nearest valid heights: \[8\]"),
])
def test_invalid_sizes_name_the_valid_ones(size, message):
    with pytest.raises(ValueError, match=message):
        UNet(depth=3, width=4)(torch.randn(1, 3, *size))


def test_bad_inputs_and_configs():
    with pytest.raises(ValueError, match=r"expects images \[B, 3, H, W\], got Tensor\[3, 16, 16\]"):
        UNet(width=4)(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match=r"expects images \[B, 3, H, W\], got Tensor\[1, 1, 16, 16\]"):
        UNet(width=4)(torch.randn(1, 1, 16, 16))
    for bad in ({"depth": 0}, {"width": 2.5}, {"num_classes": 1}, {"upsample": "nearest"}, {"skip": 1}):
        with pytest.raises(ValueError, match="UNetConfig"):
            UNetConfig(**bad)
    with pytest.raises(ValueError, match="not both"):
        UNet(UNetConfig(), width=4)


def conv_params(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


def double_conv_params(c_in, c_out):
    return conv_params(c_in, c_out, 3, False) + 2 * c_out + conv_params(c_out, c_out, 3, False) + 2 * c_out  # + BN


@pytest.mark.parametrize("skip", [True, False])
def test_parameter_count_by_hand(skip):
    # depth 2, width 4: encoder 3->4, 4->8; bottleneck 8->16; decoder levels 8 and 4; head 4->2
    expected = double_conv_params(3, 4) + double_conv_params(4, 8) + double_conv_params(8, 16)
    expected += conv_params(16, 8, 2, True) + double_conv_params(16 if skip else 8, 8)  # up to level 1
    expected += conv_params(8, 4, 2, True) + double_conv_params(8 if skip else 4, 4)  # up to level 0
    expected += conv_params(4, 2, 1, True)
    model = UNet(UNetConfig(num_classes=2, depth=2, width=4, skip=skip))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_it_learns_a_tiny_task_with_fit():
    """Overfit 4 images of a left/right split: pixel accuracy must reach 95% within 150 steps."""
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[..., 8:] = 1
    images[..., 8:] += 1.0  # the right half is brighter
    model = UNet(UNetConfig(num_classes=2, depth=2, width=4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, [(images, labels)] * 150, lambda m, b: F.cross_entropy(m(b[0]), b[1]), optimizer,
                  max_seconds=60, progress=False)
    assert history.stopped == "data" and history.steps == 150
    assert history.losses[-1] < history.losses[0] / 5
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95
