"""Per-layer per-sample gradients for the fused DP-SGD step: Linear, Conv2d, GroupNorm.

Each rule gets a layer's input activations and output gradients for one batch and returns
the per-sample squared gradient norms plus a function that adds the clip-weighted sum of
per-sample gradients into the layer's gradient buffers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fedvault.common.errors import PrivacyConfigError

__all__ = ["RULES", "SUPPORTED_LAYERS", "Buffers", "LayerGrads"]

# Images up to this many pixels are unfolded by a matrix product (see ``_unfold``).
_SMALL_IMAGE_PIXELS = 64


class Buffers(NamedTuple):
    """A layer's views into the flat gradient buffer; ``None`` for a frozen parameter.

    ``weight`` is shaped like the weight, the others are 1-d; ``joint`` spans the weight's
    then the bias's gradient when both are trainable (they are then neighbours).
    """

    weight: torch.Tensor | None
    flat_weight: torch.Tensor | None
    bias: torch.Tensor | None
    joint: torch.Tensor | None


class LayerGrads(NamedTuple):
    """A layer's per-sample squared gradient norms, and how to add its clipped sum.

    ``accumulate(clip, alpha)`` adds ``alpha`` times the sum over the batch of each
    example's gradient times its clip factor into the layer's buffers.
    """

    sq_norms: torch.Tensor
    accumulate: Callable[[torch.Tensor, float], None]


def _materialized(pairs: list[tuple[torch.Tensor | None, torch.Tensor]]) -> LayerGrads:
    """Norms and clipped sums from explicit per-sample gradients.

    Args:
        pairs: ``(1-d buffer, per-sample gradients shaped (batch, -1))`` per parameter; a
            ``None`` buffer is a frozen parameter and is left out.
    """
    kept = [(buf, ps) for buf, ps in pairs if buf is not None]
    sq = torch.linalg.vecdot(kept[0][1], kept[0][1])
    for _, ps in kept[1:]:
        sq = sq.add_(torch.linalg.vecdot(ps, ps))

    def accumulate(clip: torch.Tensor, alpha: float) -> None:
        for buf, ps in kept:
            buf.addmv_(ps.T, clip, alpha=alpha)

    return LayerGrads(sq, accumulate)


def _linear(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, bufs: Buffers) -> LayerGrads:
    """``nn.Linear``: each example's weight gradient is the outer product ``g a^T``.

    For 2-d inputs its norm is ``|g| |a|``, so per-sample gradients are never formed and
    the clipped sum is one matrix product of the clip-weighted output gradients.
    """
    w, flat_w, b, _ = bufs
    if a.dim() != 2:  # (batch, ..., features): sum the outer products over positions
        if a.dim() < 2:
            raise PrivacyConfigError("Fused DP-SGD needs batched input to Linear layers.")
        a3 = a.reshape(a.shape[0], -1, a.shape[-1])
        g3 = g.reshape(g.shape[0], -1, g.shape[-1])
        pairs: list[tuple[torch.Tensor | None, torch.Tensor]] = [(b, g3.sum(1))]
        if flat_w is not None:
            pairs.append((flat_w, torch.bmm(g3.transpose(1, 2), a3).flatten(1)))
        return _materialized(pairs)
    if w is None:
        return _materialized([(b, g)])
    gg = torch.linalg.vecdot(g, g)
    aa = torch.linalg.vecdot(a, a)
    sq = torch.addcmul(gg, gg, aa) if b is not None else gg.mul_(aa)

    def accumulate(clip: torch.Tensor, alpha: float) -> None:
        g_t = g.T
        # The columns of g^T, one per example, times its factor.
        w.addmm_(g_t * clip, a, alpha=alpha)
        if b is not None:
            b.addmv_(g_t, clip, alpha=alpha)

    return LayerGrads(sq, accumulate)


class _ConvGeometry(NamedTuple):
    """Everything about a ``Conv2d`` that decides which input pixels each patch holds."""

    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[int, int, int, int]  # left, right, top, bottom
    padding_mode: str


def _geometry(layer: nn.Conv2d) -> _ConvGeometry:
    """The layer's patch geometry, with ``"same"``/``"valid"`` padding resolved."""
    if isinstance(layer.padding, str):
        pads = [0, 0, 0, 0]
        if layer.padding == "same":
            dims = zip(reversed(layer.kernel_size), reversed(layer.dilation), strict=True)
            for i, (k, d) in enumerate(dims):
                total = d * (k - 1)
                pads[2 * i : 2 * i + 2] = [total // 2, total - total // 2]
    else:
        ph, pw = layer.padding
        pads = [pw, pw, ph, ph]
    return _ConvGeometry(
        tuple(layer.kernel_size),
        tuple(layer.dilation),
        tuple(layer.stride),
        (pads[0], pads[1], pads[2], pads[3]),
        layer.padding_mode,
    )


def _im2col(geom: _ConvGeometry, x: torch.Tensor) -> torch.Tensor:
    """``F.unfold`` with the layer's padding: ``(batch, C * kh * kw, L)``."""
    left, right, top, bottom = geom.pads
    padding = (0, 0)
    if geom.padding_mode != "zeros":
        x = F.pad(x, geom.pads, mode=geom.padding_mode)
    elif left == right and top == bottom:
        padding = (top, left)
    else:
        x = F.pad(x, geom.pads)
    return F.unfold(
        x, geom.kernel_size, dilation=geom.dilation, padding=padding, stride=geom.stride
    )


@functools.lru_cache(maxsize=64)
def _patch_matrix(
    geom: _ConvGeometry, height: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The 0/1 matrix taking a flat image to its flat patches: ``(H * W, kh * kw * L)``."""
    pixels = height * width
    eye = torch.eye(pixels, device=device, dtype=dtype).reshape(pixels, 1, height, width)
    return _im2col(geom, eye).reshape(pixels, -1)


def _unfold(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input patches each output position sees: ``(batch, C_in * kh * kw, L)``.

    Small images go through one matrix product with a cached 0/1 patch matrix, which
    costs ``H * W`` multiply-adds per patch element and beats ``im2col``'s per-element
    indexing on CPU up to about 64 pixels; larger ones use ``F.unfold``.
    """
    geom = _geometry(layer)
    n, c, height, width = x.shape
    if height * width > _SMALL_IMAGE_PIXELS:
        return _im2col(geom, x)
    patches = _patch_matrix(geom, height, width, x.device, x.dtype)
    kk = geom.kernel_size[0] * geom.kernel_size[1]
    return (x.reshape(n * c, height * width) @ patches).view(n, c * kk, -1)


def _conv2d(layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor, bufs: Buffers) -> LayerGrads:
    """``nn.Conv2d``: per-sample weight gradients as output gradients times input patches."""
    if x.dim() != 4:
        raise PrivacyConfigError(
            f"Fused DP-SGD needs batched 4-d input to Conv2d, got shape {tuple(x.shape)}."
        )
    _, w, b, _ = bufs
    n, groups = x.shape[0], layer.groups
    g = g.reshape(n, layer.out_channels, -1)
    pairs: list[tuple[torch.Tensor | None, torch.Tensor]] = [(b, g.sum(2))]
    if w is not None:
        cols = _unfold(layer, x)
        if groups == 1:
            ps = torch.bmm(g, cols.transpose(1, 2))
        else:
            ps = torch.einsum(
                "bgol,bgkl->bgok",
                g.reshape(n, groups, -1, g.shape[-1]),
                cols.reshape(n, groups, -1, cols.shape[-1]),
            )
        pairs.append((w, ps.reshape(n, -1)))
    return _materialized(pairs)


def _group_norm(layer: nn.GroupNorm, x: torch.Tensor, g: torch.Tensor, bufs: Buffers) -> LayerGrads:
    """``nn.GroupNorm``: per-sample affine gradients from the normalized input."""
    _, w, b, joint = bufs
    n, c = x.shape[0], layer.num_channels
    g3 = g.reshape(n, c, -1)
    ps_b = g3.sum(2)
    if w is None:
        return _materialized([(b, ps_b)])
    x_hat = F.group_norm(x, layer.num_groups, eps=layer.eps).reshape(n, c, -1)
    ps_w = torch.linalg.vecdot(g3, x_hat)
    if joint is not None:  # one norm and one product for both: these are small
        return _materialized([(joint, torch.stack([ps_w, ps_b], 1).view(n, -1))])
    return _materialized([(w, ps_w), (b, ps_b)])


_Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor, Buffers], LayerGrads]
RULES: dict[type[nn.Module], _Rule] = {
    nn.Linear: _linear,  # type: ignore[dict-item]
    nn.Conv2d: _conv2d,  # type: ignore[dict-item]
    nn.GroupNorm: _group_norm,  # type: ignore[dict-item]
}
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = tuple(RULES)
