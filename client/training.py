"""Local training at a site: DP-SGD with Opacus (or plain SGD for baselines), and evaluation."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedvault.common.errors import PrivacyConfigError

__all__ = ["TrainResult", "steps_per_epoch", "train_local"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What one local training pass did; ``sample_rate``/``steps`` feed the accountant."""

    loss: float
    steps: int
    sample_rate: float
    num_examples: int


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Steps in one epoch: Opacus samples each example with rate 1/ceil(n/b), ceil(n/b) times."""
    return math.ceil(num_examples / batch_size)


def train_local(
    *,
    model: nn.Module,
    data: TensorDataset,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    noise_multiplier: float | None,
    max_grad_norm: float,
    device: torch.device,
    generator: torch.Generator,
    grad_sample_mode: str = "hooks",
) -> TrainResult:
    """Train ``model`` in place on ``data``.

    With a ``noise_multiplier`` this is DP-SGD: Poisson sampling at rate 1/ceil(n/b),
    each example's gradient clipped to ``max_grad_norm``, Gaussian noise of standard
    deviation ``noise_multiplier * max_grad_norm`` added to the sum. With ``None`` it is
    plain minibatch SGD (for non-private baselines only).

    Raises:
        PrivacyConfigError: a non-positive noise multiplier (that would be no privacy).
    """
    n = len(data)
    model.to(device)
    model.train()
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    criterion: nn.Module = nn.CrossEntropyLoss()
    sample_rate = 1.0 / len(loader)
    if noise_multiplier is not None:
        if not noise_multiplier > 0:
            raise PrivacyConfigError(f"noise multiplier must be > 0, got {noise_multiplier}.")
        engine = PrivacyEngine(accountant="prv")
        noise_gen = torch.Generator(device=device)
        noise_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        with warnings.catch_warnings():
            # Opacus warns that a seeded generator is not cryptographically secure; the
            # seed is the run's (see README, "Reproducibility and randomness").
            warnings.simplefilter("ignore", UserWarning)
            private = engine.make_private(
                module=model,
                optimizer=opt,
                criterion=criterion,
                data_loader=loader,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                poisson_sampling=True,
                noise_generator=noise_gen,
                grad_sample_mode=grad_sample_mode,
            )
        if grad_sample_mode == "ghost":
            train_model, opt, criterion, loader = private
        else:
            train_model, opt, loader = private
        sample_rate = float(loader.sample_rate)
    else:
        train_model = model

    total_loss, total_seen, steps = 0.0, 0, 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = criterion(train_model(x), y)
            loss.backward()
            opt.step()
            steps += 1
            if len(y):
                total_loss += float(loss.detach()) * len(y)
                total_seen += len(y)
    if noise_multiplier is not None:
        # Strip Opacus's hooks so the caller's module is a plain nn.Module again.
        train_model.remove_hooks()
    return TrainResult(
        loss=total_loss / max(total_seen, 1), steps=steps, sample_rate=sample_rate, num_examples=n
    )
