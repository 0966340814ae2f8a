"""Fused DP-SGD: the clipped, noised sum Opacus's DPOptimizer would take, and clean refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import TensorDataset

from fedvault.client._fastdp import FusedDPSGD
from fedvault.client.training import train_local
from fedvault.common.data import Standardizer, load_dataset
from fedvault.common.errors import PrivacyConfigError
from fedvault.common.nets import MODELS, build_model


class ConvZoo(nn.Module):
    """Convolutions with stride, padding, dilation, groups, a 3-d linear and a frozen bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=2)
        self.conv2 = nn.Conv2d(4, 6, kernel_size=3, padding="same", dilation=2)
        self.conv3 = nn.Conv2d(6, 6, kernel_size=(2, 3), groups=2, bias=False)
        self.conv4 = nn.Conv2d(6, 4, kernel_size=3, padding=1, padding_mode="reflect")
        self.norm = nn.GroupNorm(2, 4)
        self.norm.bias.requires_grad_(False)
        self.rows = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = self.norm(self.conv4(torch.tanh(self.conv3(x))))
        x = self.rows(x.flatten(2).transpose(1, 2))  # (batch, positions, 4) -> 5
        return self.head(torch.relu(x).mean(1))


def _model(kind: str) -> tuple[nn.Module, tuple[int, ...], int]:
    if kind == "mlp":
        return build_model("mlp", input_shape=(30,), num_classes=2), (30,), 2
    if kind == "cnn":
        return build_model("cnn", input_shape=(1, 8, 8), num_classes=10), (1, 8, 8), 10
    if kind == "cnn-rgb":
        return build_model("cnn", input_shape=(3, 12, 12), num_classes=5), (3, 12, 12), 5
    side = 7 if kind == "conv-zoo-small" else 13  # 49 or 169 pixels: both unfold paths
    return ConvZoo(), (3, side, side), 3


def _per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Reference per-sample gradients of each example's own loss, with torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}

    def loss(p, xi, yi):
        out = functional_call(model, {**p, **frozen}, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def _reference_clipped_sum(model, x, y, max_grad_norm):
    per_sample = _per_sample_grads(model, x, y)
    flat = [g.reshape(len(x), -1) for g in per_sample.values()]
    norms = torch.cat(flat, dim=1).norm(dim=1)
    clip = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    return {k: torch.einsum("i,i...->...", clip, g) for k, g in per_sample.items()}, norms


def _fused(model, *, noise=0.0, max_grad_norm=1.0, expected=16, seed=0, lr=0.0):
    trainable = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    return FusedDPSGD(
        module=model,
        optimizer=torch.optim.SGD(trainable, lr=lr),
        criterion=nn.CrossEntropyLoss(),
        noise_multiplier=noise,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected,
        generator=gen,
    )


def _batch(shape, classes, n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64) * 2
    return x, torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn-rgb", "conv-zoo-small", "conv-zoo-large"])
def test_clipped_sum_equals_per_sample_reference(kind):
    torch.manual_seed(0)
    model, shape, classes = _model(kind)
    model = model.double()
    x, y = _batch(shape, classes)
    _, norms = _reference_clipped_sum(model, x, y, 1.0)
    bound = float(norms.median())  # half the examples are clipped, half are not
    expected, _ = _reference_clipped_sum(model, x, y, bound)

    fused = _fused(model, max_grad_norm=bound, expected=16)
    fused.step(x, y)

    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, expected[name] / 16, rtol=1e-9, atol=1e-12)
        else:
            assert p.grad is None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_in_the_zoo_takes_fused_steps(name):
    model = build_model(name, input_shape=(1, 8, 8), num_classes=10)
    fused = _fused(model, noise=1.0, lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch((1, 8, 8), 10)
    fused.step(x.float(), y)
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_update_equals_opacus_dp_optimizer_without_noise(kind):
    torch.manual_seed(1)
    model, shape, classes = _model(kind)
    twin = copy.deepcopy(model)
    x, y = _batch(shape, classes, n=40)
    x = x.float()

    fused = _fused(model, max_grad_norm=0.7, expected=32, lr=0.1)
    fused.step(x, y)

    gsm = GradSampleModule(twin)
    opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=0.7,
        expected_batch_size=32,
    )
    nn.CrossEntropyLoss()(gsm(x), y).backward()
    opt.step()
    gsm.remove_hooks()

    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


def _noisy_grads(seed: int, *, x=None, y=None) -> torch.Tensor:
    torch.manual_seed(2)
    model, shape, classes = _model("cnn")
    if x is None:
        x, y = _batch(shape, classes)
    fused = _fused(model, noise=1.3, max_grad_norm=0.5, expected=20, seed=seed)
    fused.step(x.float(), y)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _fused_clean_grads() -> torch.Tensor:
    torch.manual_seed(2)
    model, shape, classes = _model("cnn")
    x, y = _batch(shape, classes)
    _fused(model, max_grad_norm=0.5, expected=20).step(x.float(), y)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_same_noise_seed_same_step_other_seed_other_step():
    assert torch.equal(_noisy_grads(5), _noisy_grads(5))
    assert not torch.allclose(_noisy_grads(5), _noisy_grads(6))


def test_empty_batch_still_adds_noise_of_sigma_c_over_expected_batch():
    empty_x, empty_y = torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)
    noise = _noisy_grads(7, x=empty_x, y=empty_y)
    assert noise.numel() > 5_000
    std = 1.3 * 0.5 / 20
    assert float(noise.std()) == pytest.approx(std, rel=0.05)
    assert abs(float(noise.mean())) < 5 * std / noise.numel() ** 0.5


def test_noise_on_a_real_batch_has_the_same_scale():
    clean = _fused_clean_grads()
    noisy = _noisy_grads(8)
    assert float((noisy - clean).std()) == pytest.approx(1.3 * 0.5 / 20, rel=0.05)


class _Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x).mean(1))


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


class _Scaled(nn.Module):
    """A bare parameter used in ``forward``: nothing could clip it per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (_Embedder(), "embed \\(Embedding\\)"),
        (_Recurrent(), "lstm \\(LSTM\\)"),
        (_Scaled(), "_Scaled"),
    ],
)
def test_layers_it_cannot_clip_are_refused_before_training(model, match):
    with pytest.raises(PrivacyConfigError, match=match) as info:
        _fused(model)
    assert "hooks" in str(info.value)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.linear(self.fc(x), self.fc.weight))


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.fc(x)))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (_Tied(), "'fc.weight' enters the loss 2 times"),
        (_Twice(), "called exactly once"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)), "in place"),
    ],
)
def test_parameters_it_would_miss_are_refused_at_the_first_step(model, match):
    fused = _fused(model)
    with pytest.raises(PrivacyConfigError, match=match):
        fused.step(torch.randn(8, 4), torch.randint(0, 2, (8,)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": -1.0}, "noise multiplier"),
        ({"max_grad_norm": 0.0}, "max grad norm"),
        ({"expected_batch_size": 0}, "expected batch size"),
        ({"criterion": nn.CrossEntropyLoss(reduction="none")}, "'mean' or 'sum'"),
    ],
)
def test_bad_privacy_settings_are_refused(kwargs, match):
    model = build_model("mlp", input_shape=(30,), num_classes=2)
    settings = {
        "module": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "criterion": nn.CrossEntropyLoss(),
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "expected_batch_size": 16,
    } | kwargs
    with pytest.raises(PrivacyConfigError, match=match):
        FusedDPSGD(**settings)


def test_an_optimizer_over_other_parameters_is_refused():
    model = build_model("mlp", input_shape=(30,), num_classes=2)
    first = next(model.parameters())
    with pytest.raises(PrivacyConfigError, match="exactly the model's trainable parameters"):
        FusedDPSGD(
            module=model,
            optimizer=torch.optim.SGD([first], lr=0.1),
            criterion=nn.CrossEntropyLoss(),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=16,
        )


def test_close_leaves_a_plain_module():
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    fused = _fused(model)
    fused.close()
    assert not any("forward" in vars(m) for m in model.modules())


def test_train_local_fused_learns_digits_and_restores_the_model():
    ds = load_dataset("digits")
    x = torch.from_numpy(Standardizer.fit(ds.x).transform(ds.x))
    y = torch.from_numpy(ds.y)
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y).item()
    result = train_local(
        model=model,
        data=TensorDataset(x, y),
        epochs=3,
        batch_size=64,
        learning_rate=0.05,
        momentum=0.9,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        logits = model(x)
    after = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(1) == y).float().mean().item()
    assert after < 0.5 * before
    assert accuracy > 0.6  # chance is 0.1
    assert result.steps == 3 * 29 and result.sample_rate == pytest.approx(1 / 29)
    assert not any("forward" in vars(m) for m in model.modules())


def test_train_local_refuses_an_unknown_grad_sample_mode():
    model = build_model("mlp", input_shape=(30,), num_classes=2)
    data = TensorDataset(torch.randn(20, 30), torch.randint(0, 2, (20,)))
    with pytest.raises(PrivacyConfigError, match="grad-sample-mode must be one of"):
        train_local(
            model=model,
            data=data,
            epochs=1,
            batch_size=8,
            learning_rate=0.1,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(0),
            grad_sample_mode="magic",
        )
