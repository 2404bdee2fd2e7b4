"""A small multi-label classifier of the shapes: which kinds of shape are in the image.

The network is built for explaining: five convolution blocks (convolution, BatchNorm,
``nn.ReLU`` *modules*, never in-place or functional, so hooks on them see every
activation), global average pooling and one linear layer. With that head a class score is
a weighted sum of the last feature maps' means, the condition under which the class
activation map (CAM) is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cs_dense.data.shapes import CLASSES
from cs_dense.metrics.ap import average_precision
from cs_dense.validation import check_tensor

#: The classifier's outputs: column ``k`` says whether a ``SHAPE_CLASSES[k]`` is present
#: (dataset label ``k + 1``; the dataset's background class has no column).
SHAPE_CLASSES: tuple[str, ...] = CLASSES[1:]


def presence(targets: Sequence[dict]) -> Tensor:
    """Multi-label targets of shapes samples: ``[B, 3]`` float, 1 where the image holds at
    least one object of that kind.

    Args:
        targets: dicts with ``labels`` (Tensor[N] int64, 1..3), as :func:`cs_dense.data.make_sample` makes.
    """
    out = torch.zeros(len(targets), len(SHAPE_CLASSES))
    for row, target in zip(out, targets):
        labels = target["labels"].cpu()
        if len(labels) and (labels.min() < 1 or labels.max() > len(SHAPE_CLASSES)):
            raise ValueError(f"labels must be in 1..{len(SHAPE_CLASSES)}, got {labels.tolist()}")
        row[labels - 1] = 1.0
    return out


class ShapesClassifier(nn.Module):
    """Convolution blocks, global average pooling, one linear layer.

    Block ``i`` is ``Sequential(Conv2d, BatchNorm2d, ReLU)``; the first block uses a
    ``first_kernel`` × ``first_kernel`` kernel with stride 2 (its filters are large enough
    to look at), the others 3 × 3 with the given strides. On 128 × 128 images the default
    network ends on ``128 × 16 × 16`` feature maps.

    Attributes:
        features (nn.Sequential): the blocks; ``features[-1]`` is the layer CAM uses.
        classifier (nn.Linear): ``widths[-1] -> num_classes``.

    Args:
        widths: output channels of each block.
        strides: stride of each block (the first block's included).
        first_kernel: odd kernel size of the first convolution.
        num_classes: outputs.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128, 128),
        strides: Sequence[int] = (2, 2, 2, 1, 1),
        first_kernel: int = 7,
        num_classes: int = len(SHAPE_CLASSES),
    ) -> None:
        super().__init__()
        if len(widths) == 0 or len(widths) != len(strides):
            raise ValueError(f"widths and strides must be non-empty and of equal length, got {widths} and {strides}")
        if first_kernel < 1 or first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be an odd positive int, got {first_kernel}")
        blocks, channels = [], 3
        for i, (width, stride) in enumerate(zip(widths, strides)):
            kernel = first_kernel if i == 0 else 3
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, kernel, stride=stride, padding=kernel // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                )
            )
            channels = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (unnormalised scores) ``[B, num_classes]`` of images ``[B, 3, H, W]``."""
        return self.classifier(self.features(images).mean(dim=(2, 3)))


def multilabel_ap(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of each class of a multi-label classifier.

    Per column, the images ranked by score are the predictions and the images holding
    that class the true positives; AP is the area under the precision envelope (the VOC
    2010 rule, :func:`cs_dense.metrics.average_precision` with ``method="voc"``).

    Args:
        scores (Tensor[B, C]): any monotone score (logits or probabilities).
        labels (Tensor[B, C]): 0/1 presence.

    Returns:
        Tensor[C] float64: NaN for a class no image holds.
    """
    check_tensor(scores, "scores", ndim=2, shape="[B, C]")
    if not isinstance(labels, Tensor) or labels.shape != scores.shape:
        raise ValueError(f"labels must be a tensor of the scores' shape {list(scores.shape)}, got {labels!r}")
    present = labels.detach().cpu().bool()
    return torch.tensor(
        [
            average_precision(scores[:, c].detach().cpu(), present[:, c], int(present[:, c].sum()), method="voc")
            for c in range(scores.shape[1])
        ],
        dtype=torch.float64,
    )
