"""Pick the torch device, prepare the process for training on it, make runs reproducible."""

from __future__ import annotations

import ctypes
import logging
import random
import sys

import numpy as np
import torch

__all__ = ["pick_device", "seed_everything", "tune_cpu_allocator"]

log = logging.getLogger("fedvault.device")

# glibc's mallopt parameters, and the values training sets: freed blocks up to 32 MiB stay
# in the heap (glibc's largest mmap threshold), and a heap is trimmed only once 256 MiB of
# it are free at its top (per arena: each thread that allocates may have its own).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 256 * 1024 * 1024
_tuned: bool | None = None


def pick_device(preference: str = "auto") -> torch.device:
    """Return the device to train on.

    Args:
        preference: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Raises:
        ValueError: an unknown preference, or CUDA asked for on a machine without it.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"Device {preference!r} was requested but CUDA is not available on this "
                "machine; use 'auto' or 'cpu'."
            )
        return torch.device(preference)
    raise ValueError(f"Unknown device {preference!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def tune_cpu_allocator() -> bool:
    """Let a CPU training process reuse the memory of its freed tensors (glibc only).

    By default glibc's malloc serves blocks of 128 KiB and up (per-sample gradients,
    unfolded image patches) with fresh ``mmap``s and hands them back on ``free``, so each
    training step faults in and zeroes new pages for what the step before just freed; its
    adaptive threshold only sometimes settles above a model's sizes. On a small CNN that
    made the same DP-SGD step take 2.4 or 3.5 ms depending on the process's history.
    Keeping freed blocks in the heap makes steps cost the same every time. The price is
    memory kept for reuse: glibc trims a heap only once 256 MiB at its top are free.

    Returns:
        Whether the allocator was tuned (False on other C libraries, where nothing is done).
    """
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
            except (OSError, AttributeError):  # musl and others: no mallopt to call
                log.debug("No glibc mallopt here; the allocator is left as it is")
            else:
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _tuned = bool(
                    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                    and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                )
    return _tuned
