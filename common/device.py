"""Pick the torch device and make runs reproducible."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["pick_device", "seed_everything"]


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
