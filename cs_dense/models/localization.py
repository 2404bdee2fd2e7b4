"""Classification plus localisation: one object, one class, one box — the step before detection.

A shared backbone feeds two heads: a class head (``C`` logits) and a box head (4 numbers,
the box in normalised xyxy, ``[0, 1]`` of the image's width and height). Training minimises
a multitask loss, softmax cross-entropy plus a weighted box regression loss. The model
has room for exactly one box, which is why it cannot detect a variable number of objects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_dense.models.two_stage import small_backbone
from cs_dense.validation import check_choice, check_real, check_tensor, describe

#: Box regression losses :func:`localization_loss` knows.
BOX_LOSSES = ("l2", "smooth_l1")


def localization_loss(
    class_logits: Tensor,
    box_pred: Tensor,
    labels: Tensor,
    boxes: Tensor,
    box_weight: float = 1.0,
    box_loss: str = "l2",
) -> dict[str, Tensor]:
    """The multitask loss of a single-object classifier and localiser.

    ``classification`` is the softmax cross-entropy averaged over the batch. ``box`` is the
    regression loss averaged over the ``4 B`` coordinates: squared error (``"l2"``) or
    smooth L1 with ``beta = 1`` (``"smooth_l1"``: quadratic below 1, linear above).
    ``total = classification + box_weight * box``.

    Args:
        class_logits (Tensor[B, C]): unnormalised class scores.
        box_pred (Tensor[B, 4]): predicted boxes, normalised xyxy.
        labels (Tensor[B] int64): the class of each image's one object.
        boxes (Tensor[B, 4]): the object's box, normalised xyxy.
        box_weight: the weight ``λ`` of the box loss, ``>= 0``.
        box_loss: ``"l2"`` or ``"smooth_l1"``.

    Returns:
        dict: ``classification``, ``box`` and ``total``, each a 0-d tensor differentiable
        with respect to the predictions.

    Raises:
        ValueError: shapes that do not line up, labels out of range, a negative weight or
            an unknown ``box_loss``.
    """
    check_tensor(class_logits, "class_logits", ndim=2, shape="[B, C]", floating=True)
    B, C = class_logits.shape
    check_tensor(box_pred, "box_pred", ndim=2, last=4, shape="[B, 4]", floating=True)
    check_tensor(boxes, "boxes", ndim=2, last=4, shape="[B, 4]", floating=True)
    check_tensor(labels, "labels", ndim=1, shape="[B]", dtype=torch.int64)
    if box_pred.shape[0] != B or boxes.shape[0] != B or labels.shape[0] != B:
        raise ValueError(
            f"class_logits, box_pred, boxes and labels must have the same batch size B = {B}, got "
            f"{describe(box_pred)}, {describe(boxes)}, {describe(labels)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels must lie in [0, {C}), got {labels.tolist()}")
    check_real("box_weight", box_weight, low=0)
    check_choice("box_loss", box_loss, BOX_LOSSES)
    classification = F.cross_entropy(class_logits, labels)
    if box_loss == "l2":
        box = F.mse_loss(box_pred, boxes.to(box_pred.dtype))
    else:
        box = F.smooth_l1_loss(box_pred, boxes.to(box_pred.dtype), beta=1.0)
    return {"classification": classification, "box": box, "total": classification + box_weight * box}


#: Side of the pooled grid the heads read: coarse enough to be cheap, fine enough to keep
#: *where* things are (a global average would keep only *what*).
POOLED_SIZE = 4


class SingleObjectLocalizer(nn.Module):
    """The course's small stride-8 backbone, a shared fully connected layer, and two heads.

    The backbone's map is average-pooled to a ``4 x 4`` grid and flattened, so the
    features still say where in the image something is (a global average would not), then
    one hidden layer is shared by both heads, as in the classification-plus-localisation
    networks of the lecture.

    Args:
        num_classes: classes of the one object (no background class: there is always
            exactly one object).
        channels, width: backbone output and first-stage channels.
        hidden: width of the shared fully connected layer.

    Input: images ``[B, 3, H, W]`` in ``[0, 1]``, ``H`` and ``W`` at least 32. Output:
    ``(class_logits [B, C], boxes [B, 4])``, the boxes normalised xyxy in ``[0, 1]`` (a
    sigmoid keeps them inside the image; nothing forces ``x1 <= x2``, which training learns).
    """

    def __init__(self, num_classes: int = 3, channels: int = 64, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.backbone = small_backbone(channels, width)
        self.shared = nn.Sequential(
            nn.AdaptiveAvgPool2d(POOLED_SIZE), nn.Flatten(), nn.Linear(channels * POOLED_SIZE**2, hidden), nn.ReLU()
        )
        self.class_head = nn.Linear(hidden, num_classes)
        self.box_head = nn.Linear(hidden, 4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        check_tensor(images, "images", ndim=4, shape="[B, 3, H, W]", floating=True)
        features = self.shared(self.backbone(images - 0.5))  # [B, hidden]: read by both heads
        return self.class_head(features), torch.sigmoid(self.box_head(features))
