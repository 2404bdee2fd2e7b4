"""The checks and guards notebook test cells rely on: each must fail when it should, and say why."""

from __future__ import annotations

import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import torchvision

import cs_dense.ops
from cs_dense.grading import (
    CheckFailure,
    ForbiddenCallError,
    TimeLimitExceeded,
    assert_dict_close,
    assert_int_equal,
    assert_scalar_close,
    assert_tensor_close,
    call_student,
    check,
    check_raises,
    compare,
    devices,
    forbid,
    time_limit,
)


class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


class FakeTensor(torch.Tensor):
    """A tensor subclass that would fool a check relying on overridable methods."""


# ----------------------------------------------------------------------------- checks


def test_equal_tensors_pass(device):
    x = torch.tensor([[0.25, 1.0], [2.0, 3.0]], device=device)
    assert_tensor_close(x.clone(), x)
    assert_tensor_close(x + 5e-6, x)  # within float32's default atol of 1e-5


def test_wrong_value_names_case_index_and_error(device):
    want = torch.tensor([[0.0, 1.0], [2.0, 3.0]], device=device)
    got = want.clone()
    got[1, 0] = 2.5
    with pytest.raises(CheckFailure) as info:
        assert_tensor_close(got, want, case="hand case")
    message = str(info.value)
    assert "[hand case]" in message
    assert "1 of 4 elements wrong" in message
    assert "largest error 0.5" in message
    assert "index (1, 0)" in message
    assert "expected 2.0, got 2.5" in message


@pytest.mark.parametrize(
    "got, fragment",
    [
        (AlwaysEqual(), "expected a torch.Tensor"),
        ([0.0, 1.0], "got list"),
        (np.array([0.0, 1.0], dtype=np.float32), "got numpy.ndarray"),
        (torch.tensor([0.0, 1.0]).as_subclass(FakeTensor), "got test_grading.FakeTensor"),
        (torch.tensor([0.0, 1.0, 2.0]), "wrong shape: expected (2,), got (3,)"),
        (torch.tensor([0.0, 1.0], dtype=torch.float64), "wrong dtype: expected torch.float32, got torch.float64"),
        (torch.tensor([0, 1]), "wrong dtype"),
        (torch.tensor([0.0, float("nan")]), "1 of 2 elements wrong"),
    ],
)
def test_wrong_kinds_of_result_fail_with_a_reason(got, fragment):
    with pytest.raises(CheckFailure, match=None) as info:
        assert_tensor_close(got, torch.tensor([0.0, 1.0]))
    assert fragment in str(info.value)


def test_integer_tensors_compare_exactly():
    with pytest.raises(CheckFailure, match="exact comparison"):
        assert_tensor_close(torch.tensor([0, 2]), torch.tensor([0, 1]))
    assert_tensor_close(torch.tensor([True, False]), torch.tensor([True, False]))


def test_nan_handling_is_explicit():
    nan = torch.tensor([float("nan"), 1.0])
    with pytest.raises(CheckFailure):
        assert_tensor_close(nan.clone(), nan)
    assert_tensor_close(nan.clone(), nan, equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_wrong_device_is_reported():
    with pytest.raises(CheckFailure, match="wrong device"):
        assert_tensor_close(torch.zeros(2), torch.zeros(2, device="cuda"))


def test_scalar_check_is_type_strict():
    assert_scalar_close(0.5, 0.5)
    assert_scalar_close(np.float64(0.5), 0.5)
    assert_scalar_close(float("nan"), float("nan"))
    for bad, fragment in [(torch.tensor(0.5), ".item()"), (True, "got bool"), (AlwaysEqual(), "AlwaysEqual")]:
        with pytest.raises(CheckFailure) as info:
            assert_scalar_close(bad, 1.0)
        assert fragment in str(info.value)
    with pytest.raises(CheckFailure, match=r"expected 0\.5, got 0\.25"):
        assert_scalar_close(0.25, 0.5, case="ap")


def test_int_check():
    assert_int_equal(5, 5)
    assert_int_equal(np.int64(5), 5)
    for bad in (5.0, True, AlwaysEqual(), torch.tensor(5)):
        with pytest.raises(CheckFailure, match="expected an int"):
            assert_int_equal(bad, 5)
    with pytest.raises(CheckFailure, match="expected 5, got 4"):
        assert_int_equal(4, 5)


def test_dict_check_walks_nested_values():
    want = {"map": 0.5, "per_class": {1: 0.25, 2: 0.75}}
    assert_dict_close({"map": 0.5, "per_class": {1: 0.25, 2: 0.75}, "extra": 1.0}, want)
    with pytest.raises(CheckFailure, match="missing key 'per_class'"):
        assert_dict_close({"map": 0.5}, want)
    with pytest.raises(CheckFailure, match=r"\[mAP: 'per_class': 2\] expected 0\.75, got 0\.7"):
        assert_dict_close({"map": 0.5, "per_class": {1: 0.25, 2: 0.7}}, want, case="mAP")
    with pytest.raises(CheckFailure, match="expected a dict"):
        assert_dict_close(AlwaysEqual(), want)


# ----------------------------------------------------------------------------- guards


BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
SCORES = torch.tensor([0.9, 0.8, 0.7])
NMS_ORACLES = ("torchvision.ops.nms", "torch.ops.torchvision.nms", "torchvision.ops.boxes.nms")


def test_forbidden_function_is_caught_however_it_is_imported():
    from torchvision.ops import nms as renamed

    def sneaky(boxes, scores, threshold):
        return renamed(boxes, scores, threshold)

    with pytest.raises(ForbiddenCallError, match="torchvision.ops.nms"):
        call_student(sneaky, BOXES, SCORES, 0.5, forbidden=NMS_ORACLES)


def test_forbidden_operator_and_builtin_are_caught():
    with pytest.raises(ForbiddenCallError, match="torch.ops.torchvision.nms"):
        call_student(lambda b, s, t: torch.ops.torchvision.nms(b, s, t), BOXES, SCORES, 0.5, forbidden=NMS_ORACLES)
    with pytest.raises(ForbiddenCallError, match="torch.mul"):
        call_student(lambda x: torch.mul(x, 2), BOXES, forbidden=("torch.mul",))


def test_swallowing_the_forbidden_call_does_not_help():
    def hides(boxes, scores, threshold):
        try:
            torchvision.ops.nms(boxes, scores, threshold)
        except Exception:
            pass
        return torch.tensor([0, 2])

    with pytest.raises(ForbiddenCallError):
        call_student(hides, BOXES, SCORES, 0.5, forbidden=NMS_ORACLES)


def test_removing_the_hook_is_caught():
    def unhooks(x):
        sys.setprofile(None)
        return torchvision.ops.nms(BOXES, SCORES, 0.5)

    with pytest.raises(ForbiddenCallError, match="profile hook"):
        call_student(unhooks, 1, forbidden=NMS_ORACLES)


def test_forbidden_call_in_a_thread_is_caught():
    def threaded(x):
        worker = threading.Thread(target=torchvision.ops.nms, args=(BOXES, SCORES, 0.5))
        worker.start()
        worker.join()
        return x

    with pytest.raises(ForbiddenCallError):
        call_student(threaded, 1, forbidden=NMS_ORACLES)


def test_allowed_code_runs_and_hooks_are_restored():
    before = sys.getprofile()
    got = call_student(lambda b: b * 2, BOXES, forbidden=("torch.mul", *NMS_ORACLES))
    assert_tensor_close(got, BOXES * 2)
    assert sys.getprofile() is before
    with forbid("torchvision.ops.nms"):
        torchvision.ops.box_iou(BOXES, BOXES)  # a different function is fine


def test_bad_forbid_targets_are_rejected():
    with pytest.raises(ValueError, match="cannot forbid 'torchvision.ops.no_such_op'"):
        forbid("torchvision.ops.no_such_op")
    with pytest.raises(ValueError, match="not callable"):
        forbid("math.pi")


def test_time_limit_stops_a_loop():
    def forever(x):
        while True:
            x += 1

    started = time.perf_counter()
    with pytest.raises(TimeLimitExceeded, match="did not finish within 0.3 s"):
        call_student(forever, 0, timeout=0.3, case="loop")
    assert time.perf_counter() - started < 5
    with pytest.raises(ValueError, match="positive"):
        with time_limit(0):
            pass


def test_in_place_modification_is_reported_and_harmless():
    boxes = BOXES.clone()

    def clamps(b):
        b.clamp_(max=5)
        return b

    with pytest.raises(CheckFailure, match="modified its input `b` in place"):
        call_student(clamps, boxes)
    assert torch.equal(boxes, BOXES)


def test_student_exceptions_propagate_with_the_case():
    def broken(x):
        raise IndexError("index 3 is out of bounds")

    with pytest.raises(IndexError) as info:
        call_student(broken, 1, case="empty input")
    assert any("empty input" in note for note in info.value.__notes__)


def test_warnings_do_not_fail_a_check():
    def noisy(x):
        warnings.warn("deprecated", DeprecationWarning, stacklevel=1)
        return x

    with pytest.warns(DeprecationWarning, match="deprecated"):
        assert call_student(noisy, 3) == 3


def test_devices_lists_the_cpu_first():
    found = devices()
    assert found[0] == torch.device("cpu")
    assert (torch.device("cuda") in found) == torch.cuda.is_available()


def test_methods_resolve_from_dotted_names():
    from pycocotools.cocoeval import COCOeval

    with pytest.raises(ForbiddenCallError, match="COCOeval.evaluate"):
        with forbid("pycocotools.cocoeval.COCOeval.evaluate"):
            COCOeval.evaluate(object())  # raises inside; the call itself is what is recorded
    with pytest.raises(ValueError, match="no importable module"):
        forbid("no_such_package.anything")


# Module-level on purpose: stand-ins replace names in the student function's globals.
def student_helper(x):
    return x + 1


def student_main(x):
    return student_helper(x) * 10


def test_stand_ins_replace_helpers_only_during_the_call():
    assert student_main(1) == 20
    assert call_student(student_main, 1, stand_in={"student_helper": lambda x: x + 2}) == 30
    assert student_main(1) == 20  # restored
    assert call_student(student_main, 1, stand_in={"not_defined_before": abs}) == 20
    assert "not_defined_before" not in globals()


# ---------------------------------------------------------------- check, check_raises, compare


def _iou_by_reference(boxes1, boxes2):
    return cs_dense.ops.box_iou(boxes1, boxes2)


def test_check_passes_prints_and_returns_the_result(capsys):
    boxes = torch.tensor([[0.0, 0, 10, 10]])
    got = check(torchvision.ops.box_iou, boxes, boxes, expected=torch.ones(1, 1), case="a box with itself")
    assert torch.equal(got, torch.ones(1, 1))
    assert capsys.readouterr().out == "ok: a box with itself\n"
    check(torchvision.ops.box_iou, boxes, boxes, expected=torch.ones(1, 1), case="quiet", show=False)
    assert capsys.readouterr().out == ""


def test_check_uses_the_registry_to_forbid():
    boxes = torch.tensor([[0.0, 0, 10, 10]])
    with pytest.raises(ForbiddenCallError, match=r"called cs_dense.ops.box_iou, which is disabled"):
        check(_iou_by_reference, boxes, boxes, expected=torch.ones(1, 1), case="c", exercise="box_iou")
    with pytest.raises(ValueError, match="no graded exercise named 'box_iuo'"):
        check(_iou_by_reference, boxes, boxes, case="c", exercise="box_iuo")


def test_check_reports_a_wrong_value_with_its_case():
    boxes = torch.tensor([[0.0, 0, 10, 10]])
    with pytest.raises(CheckFailure, match=r"\[half\] values differ .* expected 0.5, got 1.0"):
        check(torchvision.ops.box_iou, boxes, boxes, expected=torch.full((1, 1), 0.5), case="half")


def test_compare_dispatches_on_the_expected_type():
    compare((torch.ones(2), 3, 0.5, True, {"a": 1.0}), (torch.ones(2), 3, 0.5, True, {"a": 1.0}), case="all kinds")
    with pytest.raises(CheckFailure, match=r"\[t, result 1\] expected 3, got 4"):
        compare((torch.ones(2), 4), (torch.ones(2), 3), case="t")
    with pytest.raises(CheckFailure, match="expected a tuple of 2 results, got a list of length 3"):
        compare([1, 2, 3], (1, 2), case="t")
    with pytest.raises(CheckFailure, match=r"expected True \(a bool\), got 1"):
        compare(1, True)
    with pytest.raises(CheckFailure, match="expected an int, got bool"):
        compare(True, 1)
    with pytest.raises(TypeError, match="cannot compare an expected value of type str"):
        compare("a", "a")


def test_check_raises_wants_the_error_and_its_words(capsys):
    def strict(fmt):
        if fmt != "xyxy":
            raise ValueError(f"fmt must be 'xyxy', got {fmt!r}")

    check_raises(strict, "yolo", mentions="fmt", case="bad format")
    assert capsys.readouterr().out.startswith("ok: bad format -> ValueError: fmt must be")
    with pytest.raises(CheckFailure, match="should say 'out_fmt'"):
        check_raises(strict, "yolo", mentions="out_fmt", case="c")
    with pytest.raises(CheckFailure, match="nothing was raised"):
        check_raises(strict, "xyxy", case="c")
    with pytest.raises(CheckFailure, match="expected a ValueError, got KeyError"):
        check_raises(lambda: {}["x"], case="c")


def test_stand_ins_by_exercise_name_use_the_registry_reference():
    namespace = {}
    exec("def student_nms(boxes, scores):\n    return box_iou(boxes, boxes)", namespace)  # noqa: S102
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])
    got = call_student(namespace["student_nms"], boxes, torch.ones(2), case="c", stand_in=["box_iou"])
    torch.testing.assert_close(got, torchvision.ops.box_iou(boxes, boxes))
    assert "box_iou" not in namespace
    with pytest.raises(ValueError, match="has no drop-in reference"):
        call_student(namespace["student_nms"], boxes, torch.ones(2), case="c", stand_in=["label_anchors"])


def test_a_time_limit_inside_the_forbid_hook_is_reported_as_time():
    # Many Python calls give the alarm many chances to fire inside the profile hook, which
    # CPython then switches off; the student must hear "too slow", not "tampering".
    def slow():
        total = 0
        while True:
            total += abs(-1)

    for _ in range(3):
        with pytest.raises(TimeLimitExceeded, match="did not finish within 0.05 s"):
            call_student(slow, case="slow", forbidden=("torchvision.ops.nms",), timeout=0.05)
