"""What notebook test cells call: strict checks that explain failures, and guards.

Typical test cell::

    from cs_dense.grading import assert_tensor_close, call_student, devices

    for dev in devices():
        boxes = torch.tensor([[10.0, 10, 50, 50]], device=dev)
        got = call_student(box_iou, boxes, boxes, case=f"a box with itself on {dev}",
                           forbidden=("torchvision.ops.box_iou", "cs_dense.ops.box_iou"))
        assert_tensor_close(got, torch.ones(1, 1, device=dev), case=f"a box with itself on {dev}")
"""

from cs_dense.grading.checks import (
    CheckFailure,
    assert_dict_close,
    assert_int_equal,
    assert_scalar_close,
    assert_tensor_close,
)
from cs_dense.grading.guards import (
    ForbiddenCallError,
    TimeLimitExceeded,
    call_student,
    devices,
    forbid,
    stand_ins,
    time_limit,
)

__all__ = [
    "CheckFailure",
    "ForbiddenCallError",
    "TimeLimitExceeded",
    "assert_dict_close",
    "assert_int_equal",
    "assert_scalar_close",
    "assert_tensor_close",
    "call_student",
    "devices",
    "forbid",
    "stand_ins",
    "time_limit",
]
