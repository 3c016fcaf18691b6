"""Device choice for kernels: ``cuda`` when available, else CPU, overridable; and host-to-device copies.

An explicit argument (``cpu``, ``cuda``, ``cuda:N``) wins; ``auto`` or nothing defers to the
``VIGIL_DEVICE`` environment variable, and without it to CUDA when available, else CPU (the automatic
fallback: a pipeline configured with ``auto`` runs everywhere).

>>> select_device("cpu").type
'cpu'
>>> import numpy as np
>>> to_device(np.arange(3.0), select_device("cpu")).tolist()
[0.0, 1.0, 2.0]
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "VIGIL_DEVICE"


def select_device(preference: str | None = None) -> torch.device:
    """Resolve ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` to a torch device.

    Asking for CUDA where there is none is an error rather than a silent fall-back, so a
    misconfigured GPU deployment fails at start instead of running slowly.
    """
    import torch  # here, not at the top: operators without torch kernels do not pay its import

    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        choice = os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {choice!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available on this machine")
    return device


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array (or tensor) on ``device``. For CUDA the host copy is page-locked first (torch's caching host
    allocator reuses pinned blocks, so this is not an allocation per batch) and the copy is asynchronous: it
    overlaps with the kernels already queued, and reading a result back (``.cpu()``) waits for it."""
    import torch

    tensor = torch.as_tensor(values, dtype=dtype)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
