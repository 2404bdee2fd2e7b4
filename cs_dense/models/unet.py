"""U-Net (Ronneberger, Fischer and Brox 2015), small and configurable, for semantic segmentation.

Encoder: ``depth`` levels of (conv 3x3 - BN - ReLU) x 2, each followed by 2x2 max pooling
that halves the resolution while the next level doubles the width. Bottleneck: the same
double convolution at ``1 / 2**depth`` resolution. Decoder: per level, upsample by 2
(a 2x2 stride-2 transposed convolution, or bilinear resize + 1x1 convolution), concatenate
the encoder's feature map of that resolution (the *skip connection*), and a double
convolution. A 1x1 convolution maps the last features to one score per class and pixel.

Differences from the paper, on purpose: convolutions are padded (``padding=1``) so the
output has the input's size and no cropping is needed, and batch normalisation (Ioffe
and Szegedy 2015, which postdates U-Net) follows every convolution. Because of the
``depth`` poolings, height and width must be multiples of ``2**depth``; other sizes raise
``ValueError`` naming the nearest valid ones rather than being silently cropped.

``UNetConfig(skip=False)`` is the ablation: the same encoder, bottleneck and decoder
without the concatenations, so the decoder must rebuild object boundaries from the
coarse bottleneck alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cs_dense.validation import describe

UPSAMPLE_MODES = ("transpose", "bilinear")


@dataclass(frozen=True)
class UNetConfig:
    """The shape of a :class:`UNet`. The defaults are the network notebook 02 trains.

    Attributes:
        in_channels: channels of the input image.
        num_classes: C, the scores per pixel (background included).
        depth: number of poolings (and of decoder levels), >= 1.
        width: channels of the first level; level ``k`` has ``width * 2**k``.
        skip: concatenate encoder features in the decoder (False: the ablation).
        upsample: ``"transpose"`` (2x2 transposed convolution, stride 2) or
            ``"bilinear"`` (bilinear resize, then a 1x1 convolution).
    """

    in_channels: int = 3
    num_classes: int = 4
    depth: int = 4
    width: int = 8
    skip: bool = True
    upsample: str = "transpose"

    def __post_init__(self):
        for name in ("in_channels", "num_classes", "depth", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"UNetConfig.num_classes must be >= 2 (background and one class), got {self.num_classes}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"UNetConfig.upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if not isinstance(self.skip, bool):
            raise ValueError(f"UNetConfig.skip must be a bool, got {self.skip!r}")

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this: ``2**depth``."""
        return 2**self.depth


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """(conv 3x3, padding 1 - batch norm - ReLU) twice: keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _upsampler(channels: int, mode: str) -> nn.Module:
    """Double the resolution and halve the channels."""
    if mode == "transpose":
        return nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(channels, channels // 2, 1)
    )


class UNet(nn.Module):
    """U-Net for per-pixel classification; see the module docstring for the architecture.

    ``forward(images)`` takes ``Tensor[B, in_channels, H, W]`` with H and W multiples of
    ``2**depth`` and returns logits ``Tensor[B, num_classes, H, W]``.
    """

    def __init__(self, config: UNetConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = UNetConfig(**overrides)
        elif overrides:
            raise ValueError("pass either a UNetConfig or keyword overrides, not both")
        self.config = config
        widths = [config.width * 2**level for level in range(config.depth + 1)]  # last = bottleneck
        self.down = nn.ModuleList()
        channels = config.in_channels
        for w in widths[:-1]:
            self.down.append(double_conv(channels, w))
            channels = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for w in reversed(widths[:-1]):  # from the deepest level up
            self.up.append(_upsampler(2 * w, config.upsample))
            self.decode.append(double_conv(2 * w if config.skip else w, w))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def check_input(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``[B, in_channels, H, W]`` with valid H, W."""
        c = self.config
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != c.in_channels:
            shape = describe(images)
            raise ValueError(f"UNet expects images [B, {c.in_channels}, H, W], got {shape}")
        height, width = images.shape[-2:]
        m = c.multiple
        if height % m or width % m or height == 0 or width == 0:
            def nearest(n):
                return sorted({max(m, n // m * m), (n // m + 1) * m})

            raise ValueError(
                f"UNet with depth {c.depth} pools {c.depth} times, so height and width must be multiples of "
                f"{m}; got {height} x {width}. Nearest valid heights: {nearest(height)}, widths: {nearest(width)} "
                f"(pad or resize the input)."
            )

    def forward(self, images: Tensor) -> Tensor:
        self.check_input(images)
        skips = []
        x = images
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = up(x)
            if self.config.skip:
                x = torch.cat([skip, x], dim=1)
            x = block(x)
        return self.head(x)
