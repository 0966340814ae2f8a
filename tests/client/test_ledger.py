"""The site's privacy ledger: limits enforced before training, durable, reproducible."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from fedvault.client.ledger import PrivacyLedger
from fedvault.common.errors import PrivacyBudgetExceeded
from fedvault.common.privacy import PrivacyStep, epsilon_spent
from tests.client.test_app import independent_epsilon

STEP = PrivacyStep(noise_multiplier=1.0, sample_rate=0.1, steps=30)
DELTA = 1e-4


def _reserve(
    ledger: PrivacyLedger,
    rnd: int,
    *,
    run: str = "run-a",
    run_limit: float = 50.0,
    total_limit: float = 50.0,
    dataset: str = "ds",
):
    return ledger.reserve(
        dataset=dataset,
        run_id=run,
        server_round=rnd,
        step=STEP,
        delta=DELTA,
        accountant="rdp",
        max_run_epsilon=run_limit,
        max_total_epsilon=total_limit,
        budget_delta=DELTA,
    )


def test_each_round_is_recorded_and_epsilon_composes(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    first = _reserve(ledger, 1)
    ledger.commit(first)
    second = _reserve(ledger, 2)
    ledger.commit(second)
    assert 0 < first.run_epsilon < second.run_epsilon
    assert second.run_epsilon == pytest.approx(
        epsilon_spent([STEP, STEP], delta=DELTA, accountant="rdp")
    )
    assert ledger.run_noise("ds", "run-a") == 1.0
    [status] = ledger.status(budget_delta=DELTA)
    assert (status.dataset, status.runs, status.rounds, status.refusals) == ("ds", 1, 2, 0)


def test_epsilon_recomputed_from_rows_matches_an_independent_accountant(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    for rnd in (1, 2, 3):
        ledger.commit(_reserve(ledger, rnd))
    rows = (
        sqlite3.connect(tmp_path / "ledger.sqlite")
        .execute(
            "SELECT noise_multiplier, sample_rate, steps, delta, run_epsilon "
            "FROM spends ORDER BY id"
        )
        .fetchall()
    )
    recorded = rows[-1][4]
    history = [(n, q, s) for n, q, s, _, _ in rows]
    assert independent_epsilon(history, DELTA) == pytest.approx(recorded, abs=0.01)
    assert PrivacyLedger(tmp_path / "ledger.sqlite").epsilon(
        "ds", delta=DELTA, accountant="rdp"
    ) == pytest.approx(recorded, abs=0.01)


def test_a_round_past_the_run_limit_is_refused_and_recorded(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    one = epsilon_spent([STEP], delta=DELTA, accountant="rdp")
    ledger.commit(_reserve(ledger, 1, run_limit=one * 1.05))
    with pytest.raises(PrivacyBudgetExceeded, match=r"round 2 would bring run run-a .* limit"):
        _reserve(ledger, 2, run_limit=one * 1.05)
    # Another run on the same dataset still has its own per-run allowance.
    ledger.commit(_reserve(ledger, 1, run="run-b", run_limit=one * 1.05))
    [status] = ledger.status(budget_delta=DELTA)
    assert (status.rounds, status.refusals) == (2, 1)
    _, refusals = ledger.recent()
    assert "per-run limit" in refusals[0][-1]


def test_the_dataset_budget_spans_runs_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    two = epsilon_spent([STEP, STEP], delta=DELTA, accountant="rdp")
    ledger = PrivacyLedger(path)
    ledger.commit(_reserve(ledger, 1, run="run-a", total_limit=two * 1.01))
    # A reservation whose process died before commit still counts as spent.
    _reserve(ledger, 2, run="run-a", total_limit=two * 1.01)
    reopened = PrivacyLedger(path)  # an agent restart
    with pytest.raises(PrivacyBudgetExceeded, match="over all runs"):
        _reserve(reopened, 1, run="run-b", total_limit=two * 1.01)
    assert reopened.epsilon("ds", delta=DELTA, accountant="rdp") == pytest.approx(two)


def test_a_released_reservation_costs_nothing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    ledger.release(_reserve(ledger, 1))
    assert ledger.history("ds") == []


def _race(path: str, run: str, limit: float, results) -> None:  # type: ignore[no-untyped-def]
    ledger = PrivacyLedger(Path(path))
    try:
        for rnd in range(1, 4):
            ledger.commit(_reserve(ledger, rnd, run=run, total_limit=limit))
        results.put((run, "ok"))
    except PrivacyBudgetExceeded:
        results.put((run, "refused"))


def test_concurrent_runs_cannot_overspend_one_dataset(tmp_path: Path) -> None:
    """Two processes each try 3 rounds; the budget fits 4 in all: never more are recorded."""
    path = tmp_path / "ledger.sqlite"
    PrivacyLedger(path)
    four = epsilon_spent([STEP] * 4, delta=DELTA, accountant="rdp")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(str(path), run, four * 1.001, results))
        for run in ("run-a", "run-b")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcomes = sorted(results.get(timeout=5)[1] for _ in procs)
    assert outcomes == ["ok", "refused"] or outcomes == ["refused", "refused"]
    ledger = PrivacyLedger(path)
    assert len(ledger.history("ds")) == 4
    assert ledger.epsilon("ds", delta=DELTA, accountant="rdp") <= four * 1.001
