"""Load a site's examples: bundled scikit-learn sets, or the site's own CSV and NPZ files."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedvault.common.errors import DataError

__all__ = [
    "BUNDLED",
    "Dataset",
    "Standardizer",
    "check_fits",
    "describe_bundled",
    "load_dataset",
    "stratified_split",
]


@dataclass(frozen=True)
class Dataset:
    """Examples ``x`` (float32, one row per example) and integer labels ``y``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.name, self.x[indices], self.y[indices], self.num_classes)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8)
    return Dataset("digits", x, bunch.target.astype(np.int64), 10)


def _breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Dataset("breast_cancer", bunch.data.astype(np.float32), bunch.target.astype(np.int64), 2)


BUNDLED = {"digits": _digits, "breast_cancer": _breast_cancer}


def describe_bundled(name: str) -> tuple[tuple[int, ...], int]:
    """Return (input shape, number of classes) of a bundled dataset without keeping it."""
    ds = load_dataset(name)
    return ds.input_shape, ds.num_classes


def load_dataset(
    source: str, *, label_column: str = "label", num_classes: int | None = None
) -> Dataset:
    """Load a bundled dataset by name, or a site's CSV or NPZ file by path.

    Args:
        source: ``"digits"``, ``"breast_cancer"``, or a path ending in ``.csv`` or ``.npz``.
        label_column: the CSV column holding integer class labels.
        num_classes: the number of classes the run's model has; inferred when omitted.

    Raises:
        DataError: a missing or unreadable file, a missing label column, a non-numeric
            value, or labels outside ``0..num_classes-1``.
    """
    if source in BUNDLED:
        return BUNDLED[source]()
    path = Path(source).expanduser()
    if path.suffix.lower() not in (".csv", ".npz"):
        raise DataError(
            f"Unknown dataset {source!r}: use one of {sorted(BUNDLED)} or a path to a "
            ".csv or .npz file."
        )
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist (or is not a file).")
    if path.suffix.lower() == ".csv":
        x, y = _read_csv(path, label_column)
    else:
        x, y = _read_npz(path)
    return _with_labels(path.name, x, y, path=path, num_classes=num_classes)


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read CSV file {path}: {e}") from e
    if len(rows) < 2:
        raise DataError(f"CSV file {path} needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(
            f"CSV file {path} has no label column {label_column!r}; its columns are "
            f"{header}. Name the label column in the site's configuration."
        )
    label_idx = header.index(label_column)
    features = np.empty((len(rows) - 1, len(header) - 1), dtype=np.float32)
    labels = np.empty(len(rows) - 1, dtype=np.float64)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"CSV file {path}, line {line}: {len(row)} values but the header has "
                f"{len(header)} columns."
            )
        values = []
        for column, cell in zip(header, row, strict=True):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(
                    f"CSV file {path}, line {line}, column {column!r}: {cell!r} is not a "
                    "number. Every column must be numeric (encode categories first)."
                ) from None
            if not math.isfinite(value):
                raise DataError(
                    f"CSV file {path}, line {line}, column {column!r}: {cell!r} is not a "
                    "finite number; remove or impute missing values first."
                )
            values.append(value)
        labels[line - 2] = values.pop(label_idx)
        features[line - 2] = values
    return features, labels


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise DataError(
                    f"NPZ file {path} must hold arrays named 'x' (examples) and 'y' "
                    f"(labels); it holds {sorted(keys)}."
                )
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"Cannot read NPZ file {path}: {e}") from e
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"NPZ file {path}: 'x' and 'y' must be numeric arrays.")
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"NPZ file {path}: 'x' must be (examples, ...) and 'y' (examples,) with the "
            f"same length; got x{x.shape} and y{y.shape}."
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"NPZ file {path}: 'x' holds NaN or infinite values.")
    return x, y.astype(np.float64)


def _with_labels(
    name: str, x: np.ndarray, y: np.ndarray, *, path: Path, num_classes: int | None
) -> Dataset:
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise DataError(f"{path}: labels must be whole numbers 0..K-1 (class ids).")
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: labels must be class ids 0..K-1; found {labels.min()}.")
    inferred = int(labels.max()) + 1 if labels.size else 0
    k = inferred if num_classes is None else num_classes
    if inferred > k:
        raise DataError(
            f"{path}: label {inferred - 1} does not fit the run's model, which has "
            f"{k} classes (0..{k - 1})."
        )
    return Dataset(name, x, labels, max(k, 2))


def check_fits(ds: Dataset, *, input_shape: Sequence[int], num_classes: int) -> None:
    """Raise DataError unless the examples and labels fit the run's model."""
    if ds.input_shape != tuple(input_shape):
        raise DataError(
            f"Dataset {ds.name!r} has examples shaped {ds.input_shape} but the run's model "
            f"expects {tuple(input_shape)}."
        )
    if len(ds) and int(ds.y.max()) >= num_classes:
        raise DataError(
            f"Dataset {ds.name!r} has label {int(ds.y.max())} but the run's model has "
            f"{num_classes} classes (0..{num_classes - 1})."
        )


def stratified_split(ds: Dataset, *, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split into (train, test), keeping class proportions; every class keeps >= 1 train row."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(ds.y):
        members = rng.permutation(np.flatnonzero(ds.y == label))
        n_test = min(round(len(members) * test_fraction), len(members) - 1)
        test_idx.append(members[:n_test])
    test = np.sort(np.concatenate(test_idx)) if test_idx else np.array([], dtype=np.int64)
    train = np.setdiff1d(np.arange(len(ds)), test)
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"Dataset {ds.name!r} has {len(ds)} examples: too few to split into train and "
            "test sets."
        )
    return ds.subset(train), ds.subset(test)


class Standardizer:
    """Standardization fitted on one split (a site's training split only).

    Tabular data: one mean and std per feature. Images (N, C, H, W): one per channel, so
    the scaling does not hinge on which pixels happen to vary at one site.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        axes = (0, 2, 3) if x.ndim == 4 else (0,)
        mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)[0].astype(np.float32)
        std = x.std(axis=axes, dtype=np.float64, keepdims=True)[0].astype(np.float32)
        std[std < 1e-6] = 1.0  # constant features stay constant (zero) instead of dividing by 0
        return cls(mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((x - self.mean) / self.std).astype(np.float32)
        return out
