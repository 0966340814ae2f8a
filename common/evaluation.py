"""Loss and accuracy of a model on a labelled set (used by sites and by the server)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorDataset, *, device: torch.device, batch_size: int = 512
) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of ``model`` on ``data``."""
    model.to(device)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in DataLoader(data, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        seen += len(y)
    if seen == 0:
        return math.nan, math.nan
    return total_loss / seen, correct / seen
