"""Local training at a site: DP-SGD (fused per-layer clipping or Opacus), plain SGD baselines."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedvault.client._fastdp import FusedDPSGD
from fedvault.common.device import tune_cpu_allocator
from fedvault.common.errors import PrivacyConfigError

__all__ = [
    "GRAD_SAMPLE_MODES",
    "PrivateSteps",
    "TrainResult",
    "private_steps",
    "steps_per_epoch",
    "train_local",
]

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


GRAD_SAMPLE_MODES = ("fused", "hooks", "ghost", "functorch", "ew")


@dataclass(frozen=True)
class PrivateSteps:
    """How to take DP-SGD steps: ``step(x, y)`` is one optimizer step, returning the loss.

    ``data_loader`` draws Poisson-sampled batches at ``sample_rate``; ``close`` detaches
    the per-sample gradient machinery from the model once training is over.
    """

    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data_loader: DataLoader[Any]
    sample_rate: float
    close: Callable[[], None]


def private_steps(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    data_loader: DataLoader[Any],
    noise_multiplier: float,
    max_grad_norm: float,
    noise_generator: torch.Generator,
    grad_sample_mode: str = "fused",
) -> PrivateSteps:
    """Set up DP-SGD for ``model``: Poisson sampling, per-sample clipping, Gaussian noise.

    ``"fused"`` computes the clipped sum per layer from one backward pass (see
    ``fedvault.client._fastdp``); the other modes are Opacus's ``grad_sample_mode``s. All
    sample with Opacus's ``DPDataLoader`` at rate ``1 / len(data_loader)`` and divide the
    noisy sum by the expected batch size, so they spend the same privacy.

    Raises:
        PrivacyConfigError: an unknown mode, or a model the mode cannot train privately.
    """
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise PrivacyConfigError(
            f"grad-sample-mode must be one of {', '.join(GRAD_SAMPLE_MODES)}; "
            f"got {grad_sample_mode!r}."
        )
    if grad_sample_mode == "fused":
        loader = DPDataLoader.from_data_loader(data_loader)
        num_examples = len(data_loader.dataset)  # type: ignore[arg-type]
        fused = FusedDPSGD(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            # As Opacus's make_private: the dataset size times the sample rate, rounded down.
            expected_batch_size=int(num_examples * loader.sample_rate),
            generator=noise_generator,
        )
        return PrivateSteps(fused.step, loader, float(loader.sample_rate), fused.close)
    return _opacus_steps(
        model=model,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=data_loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        noise_generator=noise_generator,
        grad_sample_mode=grad_sample_mode,
    )


def _opacus_steps(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    data_loader: DataLoader[Any],
    noise_multiplier: float,
    max_grad_norm: float,
    noise_generator: torch.Generator,
    grad_sample_mode: str,
) -> PrivateSteps:
    """DP-SGD through Opacus's ``PrivacyEngine`` with one of its grad-sample modes."""
    engine = PrivacyEngine(accountant="prv")
    with warnings.catch_warnings():
        # Opacus warns that a seeded generator is not cryptographically secure; the
        # seed is the run's (see README, "Reproducibility and randomness").
        warnings.simplefilter("ignore", UserWarning)
        private = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=data_loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise_generator,
            grad_sample_mode=grad_sample_mode,
        )
    if grad_sample_mode == "ghost":
        train_model, opt, criterion, loader = private
    else:
        train_model, opt, loader = private

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss: torch.Tensor = criterion(train_model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
        opt.step()
        return loss

    # Removing Opacus's hooks makes the caller's module a plain nn.Module again.
    return PrivateSteps(step, loader, float(loader.sample_rate), train_model.remove_hooks)


def _plain_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss: torch.Tensor = criterion(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
        optimizer.step()
        return loss

    return step


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
    grad_sample_mode: str = "fused",
) -> TrainResult:
    """Train ``model`` in place on ``data``.

    With a ``noise_multiplier`` this is DP-SGD: Poisson sampling at rate 1/ceil(n/b),
    each example's gradient clipped to ``max_grad_norm``, Gaussian noise of standard
    deviation ``noise_multiplier * max_grad_norm`` added to the sum (see
    ``private_steps`` for ``grad_sample_mode``). With ``None`` it is plain minibatch SGD
    (for non-private baselines only).

    Raises:
        PrivacyConfigError: a non-positive noise multiplier (that would be no privacy), or
            an unknown grad-sample mode.
    """
    n = len(data)
    if device.type == "cpu":
        tune_cpu_allocator()
    model.to(device)
    model.train()
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    loader: DataLoader[Any] = DataLoader(
        data, batch_size=batch_size, shuffle=True, generator=generator
    )
    criterion: nn.Module = nn.CrossEntropyLoss()
    sample_rate = 1.0 / len(loader)
    step = _plain_step(model, opt, criterion)
    close: Callable[[], None] = _nothing
    if noise_multiplier is not None:
        if not noise_multiplier > 0:
            raise PrivacyConfigError(f"noise multiplier must be > 0, got {noise_multiplier}.")
        noise_gen = torch.Generator(device=device)
        noise_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        private = private_steps(
            model=model,
            optimizer=opt,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            noise_generator=noise_gen,
            grad_sample_mode=grad_sample_mode,
        )
        step, loader, sample_rate, close = (
            private.step,
            private.data_loader,
            private.sample_rate,
            private.close,
        )

    total_loss, total_seen, steps = 0.0, 0, 0
    try:
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = step(x, y)
                steps += 1
                if len(y):
                    total_loss += float(loss.detach()) * len(y)
                    total_seen += len(y)
    finally:
        close()
    return TrainResult(
        loss=total_loss / max(total_seen, 1), steps=steps, sample_rate=sample_rate, num_examples=n
    )


def _nothing() -> None:
    """Nothing to undo after non-private training."""
