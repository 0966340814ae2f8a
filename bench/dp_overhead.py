"""DP-SGD step time over non-private step time, same model and batch size, interleaved.

For each default model (MLP on breast_cancer, CNN on digits) it times full optimizer steps
(forward, backward, clipping, noise, update) of a private and a non-private copy in
alternating blocks, so both see the same machine load. Prints per-step milliseconds and
the ratio for each, then the headline (the larger of the two ratios).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedvault.common.data import Standardizer, load_dataset
from fedvault.common.nets import build_model

CASES = {"mlp": ("breast_cancer", "mlp"), "cnn": ("digits", "cnn")}


def _data(dataset: str) -> TensorDataset:
    ds = load_dataset(dataset)
    x = Standardizer.fit(ds.x).transform(ds.x)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(ds.y))


def _batches(data: TensorDataset, batch_size: int, count: int):
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    out = []
    while len(out) < count:
        out.extend(list(loader))
    return out[:count]


def _private_step(data, model_name, shape, classes, *, batch_size, mode):
    model = build_model(model_name, input_shape=shape, num_classes=classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(data, batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = PrivacyEngine().make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            grad_sample_mode=mode,
            criterion=nn.CrossEntropyLoss(),
        )
    if mode == "ghost":
        model, opt, criterion, _ = private
    else:
        model, opt, _ = private
        criterion = nn.CrossEntropyLoss()
    return _stepper(model, opt, criterion)


def _plain_step(model_name, shape, classes):
    model = build_model(model_name, input_shape=shape, num_classes=classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return _stepper(model, opt, nn.CrossEntropyLoss())


def _stepper(model, opt, criterion):
    """One full optimizer step on a batch: the unit both sides are timed in."""

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt.step()

    return step


def measure(case: str, *, batch_size: int, mode: str, blocks: int, per_block: int):
    dataset, model_name = CASES[case]
    data = _data(dataset)
    shape, classes = tuple(data.tensors[0].shape[1:]), int(data.tensors[1].max()) + 1
    steps = {
        "non-private": _plain_step(model_name, shape, classes),
        "dp": _private_step(data, model_name, shape, classes, batch_size=batch_size, mode=mode),
    }
    batches = _batches(data, batch_size, per_block)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for block in range(blocks + 1):
        order = list(steps) if block % 2 == 0 else list(reversed(steps))
        for name in order:
            start = time.perf_counter()
            for x, y in batches:
                steps[name](x, y)
            if block:  # block 0 warms up both
                times[name].append((time.perf_counter() - start) / len(batches))
    ratios = [d / p for d, p in zip(times["dp"], times["non-private"], strict=True)]
    return (
        statistics.median(times["non-private"]),
        statistics.median(times["dp"]),
        statistics.median(ratios),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mode", default="hooks", help="Opacus grad_sample_mode")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=10)
    args = parser.parse_args()
    print(
        f"batch size {args.batch_size}, grad-sample mode {args.mode!r}, "
        f"{torch.get_num_threads()} threads, median of {args.blocks} interleaved blocks"
    )
    print(f"{'model':<6} {'non-private ms':>15} {'DP ms':>8} {'DP / non-private':>17}")
    worst = 0.0
    for case in CASES:
        plain, private, ratio = measure(
            case,
            batch_size=args.batch_size,
            mode=args.mode,
            blocks=args.blocks,
            per_block=args.per_block,
        )
        worst = max(worst, ratio)
        print(f"{case:<6} {plain * 1e3:>15.3f} {private * 1e3:>8.3f} {ratio:>17.2f}")
    print(f"RESULT dp_step_overhead={worst:.2f}")


if __name__ == "__main__":
    main()
