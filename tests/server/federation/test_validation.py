"""Update validation: malformed, poisoned or oversized updates never reach the global model."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedvault.common.errors import UpdateRejected
from fedvault.server.federation.validation import validate_update

REF = {"w": np.zeros((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}


def _record(**arrays):
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def test_well_formed_update_passes():
    out = validate_update(
        REF, _record(w=np.ones((3, 2), np.float32), b=np.ones(2, np.float32)), max_norm=10
    )
    assert out["w"].sum() == 6


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"w": np.full((3, 2), np.nan, np.float32), "b": np.zeros(2, np.float32)}, "NaN"),
        ({"w": np.full((3, 2), np.inf, np.float32), "b": np.zeros(2, np.float32)}, "infinite"),
        ({"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}, r"shape \(2, 3\)"),
        ({"w": np.zeros((3, 2), np.float64), "b": np.zeros(2, np.float32)}, "dtype float64"),
        ({"w": np.zeros((3, 2), np.float32)}, r"missing \['b'\]"),
        (
            {
                "w": np.zeros((3, 2), np.float32),
                "b": np.zeros(2, np.float32),
                "x": np.zeros(1, np.float32),
            },
            r"unexpected \['x'\]",
        ),
        (
            {"w": np.full((3, 2), 1e3, np.float32), "b": np.zeros(2, np.float32)},
            "exceeds the bound",
        ),
    ],
)
def test_bad_updates_are_rejected_with_reason(arrays, match):
    with pytest.raises(UpdateRejected, match=match):
        validate_update(REF, _record(**arrays), max_norm=100)
