"""Model weights as bytes: safetensors (no pickle, so loading never runs code)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from fedvault.common.errors import IntegrityError

__all__ = ["arrays_from_bytes", "arrays_to_bytes"]


def arrays_to_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialize named arrays in safetensors format (readable by ``safetensors.torch``)."""
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def arrays_from_bytes(data: bytes, *, name: str = "model") -> dict[str, np.ndarray]:
    """Parse safetensors bytes back into named arrays.

    Raises:
        IntegrityError: the bytes are not a valid safetensors file.
    """
    try:
        return dict(load(data))
    except (SafetensorError, ValueError) as e:
        raise IntegrityError(f"{name} is not a readable safetensors file: {e}") from e
