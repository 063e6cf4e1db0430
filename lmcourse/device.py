"""Where tensors live: one rule for every chapter.

``LMCOURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) overrides; otherwise
the first available of CUDA, Apple's MPS and the CPU. Notebooks call
:func:`get_device` once and pass the result around, so the same notebook runs
unchanged on a laptop and on the GPU runner.

Two helpers that every module shares: :func:`eval_mode` (evaluate without
dropout, then restore the mode) and :func:`best_time` (time a function alike
on any device).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.distributed
from torch import nn


def get_device() -> torch.device:
    """The device the course runs on (see the module docstring for the rule)."""
    name = os.environ.get("LMCOURSE_DEVICE", "").strip()
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"LMCOURSE_DEVICE={name!r} is not a device name (try cpu, cuda or mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"LMCOURSE_DEVICE={name!r} but this PyTorch sees no CUDA device")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"LMCOURSE_DEVICE={name!r} but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout) for a block, then restore its mode.

    The one way the package evaluates a model that may be training:

    >>> m = nn.Dropout(0.5)
    >>> with eval_mode(m):
    ...     m.training
    False
    >>> m.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on the CPU): call before reading a clock."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_time(fn: Callable[[], object], repeats: int = 3, device: torch.device | str = "cpu") -> float:
    """The fastest of ``repeats`` wall-clock timings of ``fn()``, in seconds (synchronised).

    The one timing helper of the package: every benchmark and chapter times with it,
    so two variants are always timed alike (same repeats, same synchronisation).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` outside ``torch.distributed``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
