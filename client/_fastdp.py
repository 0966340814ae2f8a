"""DP-SGD steps whose per-sample clipping comes from one backward pass, computed per layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from fedvault.client._fastdp_layers import RULES, SUPPORTED_LAYERS, Buffers
from fedvault.common.errors import PrivacyConfigError

__all__ = ["SUPPORTED_LAYERS", "FusedDPSGD"]

# Opacus's clipping factor is min(1, C / (norm + 1e-6)); kept identical here.
_CLIP_EPS = 1e-6
_HINT = "Use grad-sample-mode 'hooks' for this model."


class _Record(NamedTuple):
    """One call of a parametrized layer: its input, output, and their versions then."""

    layer: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor
    versions: tuple[int, int]


def _trainable_layers(module: nn.Module) -> list[nn.Module]:
    """The layers that own trainable parameters, each of a supported type.

    Raises:
        PrivacyConfigError: a trainable parameter this step cannot clip per sample.
    """
    layers = []
    for name, sub in module.named_modules():
        own = [p_name for p_name, p in sub.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        where = f"{name or 'the model'} ({type(sub).__name__})"
        if type(sub) not in RULES:
            supported = ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
            raise PrivacyConfigError(
                f"Fused DP-SGD cannot compute per-sample gradients for {where}: trainable "
                f"parameters must belong to {supported} (other layers must have none). " + _HINT
            )
        unknown = [p_name for p_name in own if p_name not in ("weight", "bias")]
        if unknown:
            raise PrivacyConfigError(
                f"Fused DP-SGD cannot compute per-sample gradients for parameters {unknown} "
                f"of {where}. " + _HINT
            )
        layers.append(sub)
    return layers


def _check_settings(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
) -> None:
    """Refuse bad privacy parameters and an optimizer that is not over ``params``."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise PrivacyConfigError(f"noise multiplier must be >= 0, got {noise_multiplier}.")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise PrivacyConfigError(f"max grad norm must be > 0, got {max_grad_norm}.")
    if not expected_batch_size >= 1:
        raise PrivacyConfigError(f"expected batch size must be >= 1, got {expected_batch_size}.")
    if not params:
        raise PrivacyConfigError("The model has no trainable parameters.")
    # As Opacus's DPOptimizer, frozen parameters in the optimizer are left alone.
    in_optimizer = {
        id(p) for group in optimizer.param_groups for p in group["params"] if p.requires_grad
    }
    if in_optimizer != {id(p) for p in params}:
        raise PrivacyConfigError(
            "The optimizer must hold exactly the model's trainable parameters for DP-SGD."
        )
    if len({(p.device, p.dtype) for p in params}) != 1:
        raise PrivacyConfigError(
            "Fused DP-SGD needs all trainable parameters on one device with one dtype."
        )


def _reduction(criterion: nn.Module) -> str:
    reduction = str(getattr(criterion, "reduction", "mean"))
    if reduction not in ("mean", "sum"):
        raise PrivacyConfigError(
            f"The loss must reduce the batch by 'mean' or 'sum', got {reduction!r}."
        )
    return reduction


def _graph_uses(root: torch.Tensor) -> dict[int, int]:
    """How many edges of ``root``'s autograd graph lead to each leaf tensor, by ``id``."""
    uses: dict[int, int] = {}
    seen = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            variable = getattr(nxt, "variable", None)
            if variable is not None:
                uses[id(variable)] = uses.get(id(variable), 0) + 1
            stack.append(nxt)
    return uses


class FusedDPSGD:
    """DP-SGD steps for one model and optimizer, equal in effect to Opacus's ``DPOptimizer``.

    Each step takes the per-sample gradients of the summed loss, clips each example's
    gradient (all parameters together) by the factor ``min(1, C / (norm + 1e-6))`` with
    ``C = max_grad_norm``, sums them, adds Gaussian noise of standard deviation
    ``noise_multiplier * C``, divides by ``expected_batch_size`` and lets the optimizer
    update. Per-sample gradients come per layer from the layer's input and output
    gradient, which a single ``torch.autograd.grad`` call provides. An empty batch gets
    noise alone. Batches come from Poisson sampling (Opacus's ``DPDataLoader``) outside.

    Args:
        module: the model; every trainable parameter must belong to a supported layer.
        optimizer: an optimizer over exactly the model's trainable parameters.
        criterion: the loss, whose ``reduction`` is ``"mean"`` (the default) or ``"sum"``.
        noise_multiplier: the noise standard deviation relative to ``max_grad_norm``.
        max_grad_norm: the per-sample clipping bound ``C``.
        expected_batch_size: the divisor of the noisy sum (sample rate times data size).
        generator: the noise source, on the model's device.

    Raises:
        PrivacyConfigError: a bad privacy parameter, a parameter that cannot be clipped
            per sample, or an optimizer not over exactly the model's trainable parameters.
    """

    def __init__(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        generator: torch.Generator | None = None,
    ) -> None:
        self._layers = _trainable_layers(module)
        self._params = [p for p in module.parameters() if p.requires_grad]
        _check_settings(
            optimizer,
            self._params,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
        )
        self.module, self.optimizer, self.criterion = module, optimizer, criterion
        self.noise_std = float(noise_multiplier) * float(max_grad_norm)
        self.max_grad_norm = float(max_grad_norm)
        self.expected_batch_size = expected_batch_size
        self._scaled_noise_std = self.noise_std / expected_batch_size
        self.generator = generator
        self._reduction = _reduction(criterion)
        ref = self._params[0]
        # The noise and the clipped sums, both already scaled, go into this one buffer,
        # and each parameter's ``.grad`` is a view of it.
        self._flat = torch.zeros(
            sum(p.numel() for p in self._params), device=ref.device, dtype=ref.dtype
        )
        self._grads = self._views()
        self._buffers = {id(layer): self._layer_buffers(layer) for layer in self._layers}
        self._records: list[_Record] = []
        self._recording = False
        self._call_order: list[nn.Module] = []
        self._graph_checked = False
        # Layers record their calls through a wrapped ``forward`` rather than a forward
        # hook: a hook sends every call down ``nn.Module``'s slow path, which costs more
        # than these small layers themselves.
        self._patched = [(layer, layer.__dict__.get("forward")) for layer in self._layers]
        for layer in self._layers:
            layer.forward = self._recording_forward(layer)

    def close(self) -> None:
        """Restore the layers' own ``forward``: the module is a plain ``nn.Module`` again."""
        for layer, previous in self._patched:
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous
        self._patched.clear()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One DP-SGD step on a batch; returns the batch's mean loss (``nan`` if empty)."""
        # The buffer ends as (noise + clipped sum) / expected_batch_size: the noise is
        # drawn at that scale and the sum added with that factor, sparing a pass over it.
        flat = self._flat
        if self.noise_std:
            flat.normal_(0.0, self._scaled_noise_std, generator=self.generator)
        else:
            flat.zero_()
        loss = self._add_clipped_sum(x, y) if len(x) else torch.full((), math.nan)
        for p, grad in zip(self._params, self._grads, strict=True):
            if p.grad is not grad:
                p.grad = grad
        self.optimizer.step()
        return loss

    def _views(self) -> list[torch.Tensor]:
        views, offset = [], 0
        for p in self._params:
            views.append(self._flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return views

    def _layer_buffers(self, layer: nn.Module) -> Buffers:
        spans, offset = {}, 0
        for p, grad in zip(self._params, self._grads, strict=True):
            spans[id(p)] = (offset, grad)
            offset += p.numel()
        w, b = (spans.get(id(getattr(layer, name, None))) for name in ("weight", "bias"))
        joint = None
        if w is not None and b is not None and b[0] == w[0] + w[1].numel():
            joint = self._flat[w[0] : b[0] + b[1].numel()]
        return Buffers(
            w[1] if w else None,
            w[1].view(-1) if w else None,
            b[1] if b else None,
            joint,
        )

    def _recording_forward(self, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        forward, records = layer.forward, self._records

        def recording_forward(inputs: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = forward(inputs)
            if self._recording:
                versions = (inputs._version, output._version)
                records.append(_Record(layer, inputs, output, versions))
            return output

        return recording_forward

    def _add_clipped_sum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, one backward to the layer outputs, and the clipped sum into the buffer."""
        self._records.clear()
        self._recording = True
        try:
            loss: torch.Tensor = self.criterion(self.module(x), y)
        finally:
            self._recording = False
        records = self._checked_records(loss)
        # Per-sample gradients are those of each example's own loss: the summed loss.
        scale = float(len(x)) if self._reduction == "mean" else 1.0
        out_grads = torch.autograd.grad(
            loss, [r.output for r in records], grad_outputs=loss.new_full((), scale)
        )
        self._clip_and_sum(records, out_grads)
        records.clear()  # let this batch's activations go
        return loss.detach() if self._reduction == "mean" else loss.detach() / len(x)

    @torch.no_grad()
    def _clip_and_sum(self, records: list[_Record], out_grads: tuple[torch.Tensor, ...]) -> None:
        layers = [
            RULES[type(r.layer)](r.layer, r.inputs, g, self._buffers[id(r.layer)])
            for r, g in zip(records, out_grads, strict=True)
        ]
        sq = layers[0].sq_norms  # each layer's own new tensor: safe to add into
        for lg in layers[1:]:
            sq.add_(lg.sq_norms)
        # Opacus's min(1, C / (norm + 1e-6)), in place, as reciprocal-then-multiply.
        clip = sq.sqrt_().add_(_CLIP_EPS).reciprocal_()
        if self.max_grad_norm != 1.0:
            clip.mul_(self.max_grad_norm)
        clip.clamp_max_(1.0)
        for lg in layers:
            lg.accumulate(clip, 1.0 / self.expected_batch_size)

    def _checked_records(self, loss: torch.Tensor) -> list[_Record]:
        """This pass's layer calls, refused unless each trainable layer ran once, intact."""
        records = self._records
        if len(records) != len(self._call_order) or any(
            r.layer is not layer for r, layer in zip(records, self._call_order, strict=True)
        ):
            self._check_calls(records)
        for r in records:
            if (r.inputs._version, r.output._version) != r.versions:
                raise PrivacyConfigError(
                    f"The input or output of a {type(r.layer).__name__} was modified in place "
                    "after it ran (an inplace activation?); fused DP-SGD needs them unchanged."
                )
        if not self._graph_checked:
            self._check_graph(loss)
        return records

    def _check_calls(self, records: list[_Record]) -> None:
        called = [r.layer for r in records]
        missing = [type(m).__name__ for m in self._layers if not any(m is c for c in called)]
        if missing or len(called) != len(self._layers):
            raise PrivacyConfigError(
                "Fused DP-SGD needs every trainable layer called exactly once per forward "
                f"pass; got {len(called)} calls for {len(self._layers)} layers"
                + (f", none for {missing}" if missing else "")
                + ". "
                + _HINT
            )
        self._call_order = called

    def _check_graph(self, loss: torch.Tensor) -> None:
        """Once: every trainable parameter enters the loss exactly once (no weight tying)."""
        uses = _graph_uses(loss)
        for name, p in self.module.named_parameters():
            if p.requires_grad and uses.get(id(p), 0) != 1:
                raise PrivacyConfigError(
                    f"Parameter {name!r} enters the loss {uses.get(id(p), 0)} times; fused "
                    "DP-SGD needs each trainable parameter used once, by its own layer. " + _HINT
                )
        self._graph_checked = True
