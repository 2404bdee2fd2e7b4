"""Reference models: U-Net for semantic segmentation."""

from cs_dense.models.unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
