"""Where a run starts: fresh, from a stored version (transfer), or resumed after a crash."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedvault.common.errors import ConfigError, FederationError, NotFound
from fedvault.common.privacy import PrivacyStep, epsilon_spent
from fedvault.common.run_config import RunSettings
from fedvault.server.federation.checkpoints import SitePrivacy, starting_point
from fedvault.server.store.service import Lineage, ModelStore

FRESH = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}
SETTINGS = RunSettings(num_server_rounds=4, dataset="digits", model="cnn", run_name="r1")


def _fresh() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in FRESH.items()})


def _put(store: ModelStore, value: float, *, run_id: str, rnd: int, model: str = "digits-cnn"):
    arrays = {k: np.full_like(v, value) for k, v in FRESH.items()}
    return store.put_arrays(model, arrays, lineage=Lineage(run_id=run_id, round=rnd), creator="t")


def test_a_new_run_starts_fresh_at_round_one(store: ModelStore) -> None:
    start = starting_point(store, SETTINGS, run_id="r1", fresh=_fresh())
    assert (start.first_round, start.parent, start.resumed) == (1, None, False)


def test_a_named_run_resumes_after_its_newest_stored_round(store: ModelStore) -> None:
    _put(store, 1.0, run_id="r1", rnd=1)
    _put(store, 9.0, run_id="other", rnd=3)
    _put(store, 2.0, run_id="r1", rnd=2)
    start = starting_point(store, SETTINGS, run_id="r1", fresh=_fresh())
    assert (start.first_round, start.parent, start.resumed) == (3, ("digits-cnn", 3), True)
    assert float(start.arrays["w"].numpy()[0, 0]) == 2.0


def test_a_finished_run_is_refused(store: ModelStore) -> None:
    _put(store, 1.0, run_id="r1", rnd=4)
    with pytest.raises(FederationError, match=r"already finished.*new run-name"):
        starting_point(store, SETTINGS, run_id="r1", fresh=_fresh())


def test_init_from_starts_a_new_run_from_a_stored_version(store: ModelStore) -> None:
    _put(store, 5.0, run_id="base", rnd=4, model="pretrained")
    settings = replace(SETTINGS, run_name="", init_from="pretrained:1")
    start = starting_point(store, settings, run_id="flower-9", fresh=_fresh())
    assert (start.first_round, start.parent) == (1, ("pretrained", 1))
    assert float(start.arrays["b"].numpy()[0]) == 5.0
    with pytest.raises(NotFound):
        starting_point(
            store, replace(settings, init_from="pretrained:2"), run_id="x", fresh=_fresh()
        )


def test_init_from_a_version_of_another_shape_is_refused(store: ModelStore) -> None:
    store.put_arrays(
        "other", {"w": np.zeros((5, 5), dtype=np.float32)}, lineage=Lineage(), creator="t"
    )
    settings = replace(SETTINGS, run_name="", init_from="other")
    with pytest.raises(ConfigError, match="names or shapes"):
        starting_point(store, settings, run_id="x", fresh=_fresh())


def test_site_epsilon_is_recomputed_over_every_recorded_round() -> None:
    site = SitePrivacy(site="a")
    rounds = [(1.1, 0.25, 12), (1.1, 0.25, 12), (0.9, 0.2, 15)]
    for i, (sigma, q, steps) in enumerate(rounds, start=1):
        site.add_round(
            i,
            {
                "noise-multiplier": sigma,
                "sample-rate": q,
                "steps": steps,
                "delta": 1e-4,
                "epsilon": 0.1,
            },
        )
    record = site.to_record("rdp")
    expected = epsilon_spent([PrivacyStep(*r) for r in rounds], delta=1e-4, accountant="rdp")
    assert record["epsilon"] == pytest.approx(expected)
    assert record["rounds"] == [1, 2, 3] and record["steps"] == 39
    again = SitePrivacy.from_record(record).to_record("rdp")
    assert again["epsilon"] == pytest.approx(expected)
