"""Recipes: package functions the cross-check runs in the student's kernel.

A recipe turns what the student wrote into data the grader can judge: the gradients of a
loss, the output of a class built from given weights. It runs in the kernel, next to the
student's code, so it adds no trust; it only decides which data comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def gradients(fn: Callable, *args, wrt: Sequence[int], key: str | int | None = None, **kwargs) -> tuple:
    """The gradients of ``fn(*args, **kwargs)`` (its entry ``key``, summed) with respect to the arguments ``wrt``."""
    args = list(args)
    leaves = []
    for i in wrt:
        args[i] = args[i].detach().clone().requires_grad_()
        leaves.append(args[i])
    out = fn(*args, **kwargs)
    if key is not None:
        out = out[key]
    return torch.autograd.grad(out.sum(), leaves, allow_unused=True)
