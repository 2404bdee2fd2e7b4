"""What notebook test cells call: strict checks that explain failures, and guards.

Typical test cell::

    from cs_dense.grading import check, devices

    for dev in devices():
        boxes = torch.tensor([[10.0, 10, 50, 50]], device=dev)
        check(box_iou, boxes, boxes, expected=torch.ones(1, 1, device=dev),
              case=f"a box with itself [{dev}]", exercise="box_iou")

``exercise`` names an entry of :mod:`cs_dense.grading.registry`, which lists what the
exercise may not call; ``check`` runs the function under :func:`call_student` (copies of
the inputs, a time limit, the forbidden functions disabled) and compares with
:func:`compare`.
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
from cs_dense.grading.harness import NOTHING, check, check_raises, compare
from cs_dense.grading.registry import forbidden

__all__ = [
    "NOTHING",
    "CheckFailure",
    "ForbiddenCallError",
    "TimeLimitExceeded",
    "assert_dict_close",
    "assert_int_equal",
    "assert_scalar_close",
    "assert_tensor_close",
    "call_student",
    "check",
    "check_raises",
    "compare",
    "devices",
    "forbid",
    "forbidden",
    "stand_ins",
    "time_limit",
]
