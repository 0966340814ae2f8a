"""DP-SGD step time over non-private step time, same model and batch size, interleaved.

For each default model (MLP on breast_cancer, CNN on digits) it times full optimizer steps
(forward, backward, clipping, noise, update) of a private and a non-private copy of one
model in alternating blocks on the same batches, so both see the same machine load. The
private step is the one local training takes (``fedvault.client.training.private_steps``)
in the chosen grad-sample mode; Opacus's ``hooks`` mode is timed for comparison in a pair
of its own.
Prints per-step milliseconds and ratios, then the headline: the larger of the chosen
mode's two ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedvault.client.training import GRAD_SAMPLE_MODES, private_steps
from fedvault.common.data import Standardizer, load_dataset
from fedvault.common.device import tune_cpu_allocator
from fedvault.common.nets import build_model

CASES = {"mlp": ("breast_cancer", "mlp"), "cnn": ("digits", "cnn")}
COMPARISON = "hooks"


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


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _private_step(data, model: nn.Module, *, batch_size: int, mode: str):
    """The training code's DP-SGD step, as ``train_local`` sets it up."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = private_steps(
            model=model,
            optimizer=_optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            data_loader=DataLoader(data, batch_size=batch_size),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            noise_generator=torch.Generator().manual_seed(0),
            grad_sample_mode=mode,
        )
    return private.step


def _plain_step(model: nn.Module):
    """One full non-private optimizer step on a batch."""
    opt, criterion = _optimizer(model), nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt.step()

    return step


def _paired(steps: dict, batches: list, *, blocks: int) -> dict[str, tuple[float, float]]:
    """Median ms per step of a plain and a private step in alternating blocks, and the
    median per-block ratio of private to plain."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's backward-hook notice, once per block
        for block in range(blocks + 1):
            order = list(steps) if block % 2 == 0 else list(reversed(steps))
            for name in order:
                start = time.perf_counter()
                for x, y in batches:
                    steps[name](x, y)
                if block:  # block 0 warms up both sides
                    times[name].append((time.perf_counter() - start) / len(batches))
    plain = times["non-private"]
    return {
        name: (
            statistics.median(t),
            statistics.median(d / p for d, p in zip(t, plain, strict=True)),
        )
        for name, t in times.items()
    }


def measure(case: str, *, batch_size: int, modes: list[str], blocks: int, per_block: int):
    """For each mode: median ms per step and its median per-block ratio to plain steps.

    Each mode is paired with plain steps on its own, so no mode's blocks follow another
    mode's (Opacus's hooks leave the caches cold for whatever runs next).
    """
    dataset, model_name = CASES[case]
    data = _data(dataset)
    shape, classes = tuple(data.tensors[0].shape[1:]), int(data.tensors[1].max()) + 1
    torch.manual_seed(0)
    model = build_model(model_name, input_shape=shape, num_classes=classes)
    batches = _batches(data, batch_size, per_block)
    results = {}
    for mode in modes:
        steps = {
            "non-private": _plain_step(copy.deepcopy(model)),
            mode: _private_step(data, copy.deepcopy(model), batch_size=batch_size, mode=mode),
        }
        pair = _paired(steps, batches, blocks=blocks)
        results.setdefault("non-private", pair["non-private"])  # the headline mode's pair
        results[mode] = pair[mode]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--mode",
        default="fused",
        choices=GRAD_SAMPLE_MODES,
        help="grad-sample mode to measure: 'fused' (the default of local training) or an "
        f"Opacus mode; Opacus '{COMPARISON}' is always timed alongside for comparison",
    )
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as local training on a CPU does; both sides run under it
    modes = [args.mode] + ([COMPARISON] if args.mode != COMPARISON else [])
    print(
        f"batch size {args.batch_size}, grad-sample mode {args.mode!r} (Opacus {COMPARISON!r} "
        f"for comparison), {torch.get_num_threads()} threads, median of {args.blocks} "
        "interleaved blocks"
    )
    header = f"{'model':<6} {'non-private ms':>15}"
    for mode in modes:
        header += f" {mode + ' ms':>12} {'ratio':>6}"
    print(header)
    print("(each mode's ratio is to plain steps timed in its own pair; plain ms: the first)")
    worst = 0.0
    for case in CASES:
        result = measure(
            case,
            batch_size=args.batch_size,
            modes=modes,
            blocks=args.blocks,
            per_block=args.per_block,
        )
        worst = max(worst, result[args.mode][1])
        row = f"{case:<6} {result['non-private'][0] * 1e3:>15.3f}"
        for mode in modes:
            row += f" {result[mode][0] * 1e3:>12.3f} {result[mode][1]:>6.2f}"
        print(row)
    print(f"measured mode: {args.mode}")
    print(f"RESULT dp_step_overhead={worst:.2f}")


if __name__ == "__main__":
    main()
