"""Where tensors live: one rule for every chapter.

``LMCOURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) overrides; otherwise
the first available of CUDA, Apple's MPS and the CPU. Notebooks call
:func:`get_device` once and pass the result around, so the same notebook runs
unchanged on a laptop and on the GPU runner.
"""

from __future__ import annotations

import os

import torch


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
