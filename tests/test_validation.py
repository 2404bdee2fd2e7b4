"""The shared argument checks: each names the argument, the rule and the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cs_dense.validation import (
    check_choice,
    check_int,
    check_pair,
    check_positive_numbers,
    check_real,
    check_same_length,
    check_tensor,
    describe,
)


def test_describe_names_tensors_by_shape_and_others_by_type():
    assert describe(torch.zeros(2, 4)) == "Tensor[2, 4] torch.float32 on cpu"
    assert describe([1, 2]) == "list"
    assert describe(np.zeros(3)) == "numpy.ndarray"
    assert describe(torch.nn.Parameter(torch.zeros(1))) == "torch.nn.parameter.Parameter"


def test_check_tensor():
    x = torch.zeros(3, 4)
    assert check_tensor(x, "boxes", ndim=2, last=4) is x
    with pytest.raises(ValueError, match=r"^boxes must be a tensor of shape \[\*, 4\], got Tensor\[3, 5\]"):
        check_tensor(torch.zeros(3, 5), "boxes", ndim=2, last=4)
    with pytest.raises(ValueError, match=r"^boxes must be a tensor of shape \[N, 4\], got list"):
        check_tensor([[0, 0, 1, 1]], "boxes", ndim=2, last=4, shape="[N, 4]")
    with pytest.raises(ValueError, match=r"^x must be a floating tensor of shape \[\.\.\.\], got Tensor\[2\] torch.int64"):
        check_tensor(torch.zeros(2, dtype=torch.int64), "x", floating=True)
    with pytest.raises(ValueError, match=r"^labels must be a torch.int64 tensor"):
        check_tensor(torch.zeros(2), "labels", dtype=torch.int64)
    with pytest.raises(ValueError, match="got Tensor"):
        check_tensor(torch.tensor(1.0), "x", last=4)  # a 0-d tensor has no last dimension


def test_check_same_length():
    check_same_length("scores", torch.zeros(3), 3, of="box")
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \[3\] \(one entry per box\), got Tensor\[4\]"):
        check_same_length("scores", torch.zeros(4), 3, of="box")


def test_numbers():
    assert check_int("n", np.int64(3), 1) == 3
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ValueError, match=r"^n must be an int >= 1, got"):
            check_int("n", bad, 1)
    with pytest.raises(ValueError, match=r"^k must be an int in \[0, 3\], got 4"):
        check_int("k", 4, 0, 3)
    assert check_real("w", 0, low=0) == 0.0
    for bad in (-1, float("nan"), float("inf"), True, None):
        with pytest.raises(ValueError, match=r"^w must be a number >= 0, got"):
            check_real("w", bad, low=0)
    with pytest.raises(ValueError, match=r"^p must be a number in \(0, 1\], got 0"):
        check_real("p", 0, 0, 1, open_low=True)
    assert check_positive_numbers("sizes", [16, 32.0]) == (16, 32.0)
    for bad in ([], [0], [1, -2], [True]):
        with pytest.raises(ValueError, match="sizes must be a non-empty sequence of positive numbers"):
            check_positive_numbers("sizes", bad)


def test_pairs_and_choices():
    assert check_pair(3, "kernel_size", 1) == (3, 3)
    assert check_pair([2, 5], "kernel_size", 1) == (2, 5)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a pair of ints, got \(2, 2.0\)"):
        check_pair((2, 2.0), "kernel_size", 1)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got \(1, 0\)"):
        check_pair((1, 0), "stride", 1)
    check_choice("fmt", "xyxy", ("xyxy", "xywh"))
    with pytest.raises(ValueError, match=r"fmt must be one of \('xyxy', 'xywh'\), got 'XYXY'"):
        check_choice("fmt", "XYXY", ("xyxy", "xywh"))
