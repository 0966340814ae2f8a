"""The site's privacy ledger: every DP round it trained, per dataset and run, in SQLite.

The ledger is the site's own record and the only thing its budget is checked against.
A round is *reserved* (checked against every limit and written, in one exclusive
transaction) before training starts and marked *spent* before the update leaves the site.
A reservation whose process died is never released: it counts as spent. Two runs training
the same dataset at once serialize on the reservation, so they cannot overspend it.
Epsilon is always recomputed from the recorded (noise, sample rate, steps) rows with a
fresh accountant, so anyone holding the rows gets the same number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedvault.common.errors import ConfigError, PrivacyBudgetExceeded
from fedvault.common.privacy import PrivacyStep, epsilon_spent

__all__ = ["DatasetStatus", "PrivacyLedger", "Reservation"]

LEDGER_FILE = "ledger.sqlite"

# Applied in order; PRAGMA user_version records how many have run.
_MIGRATIONS = [
    """
    CREATE TABLE runs (
        dataset TEXT NOT NULL,
        run_id TEXT NOT NULL,
        noise_multiplier REAL NOT NULL,
        started_at TEXT NOT NULL,
        PRIMARY KEY (dataset, run_id)
    );
    CREATE TABLE spends (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL,
        run_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        noise_multiplier REAL NOT NULL,
        sample_rate REAL NOT NULL,
        steps INTEGER NOT NULL,
        delta REAL NOT NULL,
        accountant TEXT NOT NULL,
        run_epsilon REAL NOT NULL,
        dataset_epsilon REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'spent')),
        created_at TEXT NOT NULL
    );
    CREATE INDEX spends_dataset_run ON spends (dataset, run_id);
    CREATE TABLE refusals (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL,
        run_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
]

# The dataset budget is always measured with one accountant (RDP: an upper bound that is
# cheap to recompute), so a run cannot stretch it by choosing another.
BUDGET_ACCOUNTANT = "rdp"

# Accountants differ in their last digits; a round that lands exactly on a limit is allowed.
_TOLERANCE = 1e-9


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Reservation:
    """A round written to the ledger before training; ``epsilon`` figures include it."""

    row_id: int
    run_epsilon: float
    dataset_epsilon: float


@dataclass(frozen=True)
class DatasetStatus:
    dataset: str
    epsilon: float
    delta: float
    runs: int
    rounds: int
    refusals: int


class PrivacyLedger:
    """A site-local SQLite ledger (WAL, synchronous FULL, exclusive reservations)."""

    def __init__(self, path: Path):
        self.path = path
        if not path.parent.is_dir():
            raise ConfigError(
                f"The ledger's directory {path.parent} does not exist; run `fedvault site init`."
            )
        with self._exclusive() as db:  # concurrent first opens wait, then see the schema
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _exclusive(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that other ledger users wait for (BEGIN IMMEDIATE)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def _steps(db: sqlite3.Connection, dataset: str, run_id: str | None) -> list[PrivacyStep]:
        query = "SELECT noise_multiplier, sample_rate, steps FROM spends WHERE dataset = ?"
        args: tuple[str, ...] = (dataset,)
        if run_id is not None:
            query += " AND run_id = ?"
            args += (run_id,)
        return [PrivacyStep(n, q, s) for n, q, s in db.execute(query + " ORDER BY id", args)]

    def history(self, dataset: str, run_id: str | None = None) -> list[PrivacyStep]:
        """Every recorded round (reserved or spent) of a dataset, or of one run on it."""
        with self._connect() as db:
            return self._steps(db, dataset, run_id)

    def trained_rounds(self, dataset: str, run_id: str) -> int:
        """How many DP-SGD rounds (not releases before training) a run recorded here."""
        with self._connect() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM spends WHERE dataset = ? AND run_id = ? AND round > 0",
                (dataset, run_id),
            ).fetchone()
        return int(row[0])

    def run_noise(self, dataset: str, run_id: str) -> float | None:
        """The noise multiplier a run fixed on its first round here, if it has one."""
        with self._connect() as db:
            row = db.execute(
                "SELECT noise_multiplier FROM runs WHERE dataset = ? AND run_id = ?",
                (dataset, run_id),
            ).fetchone()
        return None if row is None else float(row[0])

    def epsilon(
        self, dataset: str, *, delta: float, accountant: str = "prv", run_id: str | None = None
    ) -> float:
        """Recompute epsilon from the ledger rows alone, with a fresh accountant."""
        return epsilon_spent(self.history(dataset, run_id), delta=delta, accountant=accountant)

    def status(self, *, budget_delta: float) -> list[DatasetStatus]:
        """Spend per dataset, measured as the budget is (RDP at ``budget_delta``), and counts."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT dataset, COUNT(DISTINCT run_id), COUNT(*) FROM spends "
                "GROUP BY dataset ORDER BY dataset"
            ).fetchall()
            refusals = dict(
                db.execute("SELECT dataset, COUNT(*) FROM refusals GROUP BY dataset").fetchall()
            )
            out = [
                DatasetStatus(
                    dataset=dataset,
                    epsilon=epsilon_spent(
                        self._steps(db, dataset, None),
                        delta=budget_delta,
                        accountant=BUDGET_ACCOUNTANT,
                    ),
                    delta=budget_delta,
                    runs=runs,
                    rounds=rounds,
                    refusals=int(refusals.pop(dataset, 0)),
                )
                for dataset, runs, rounds in rows
            ]
        out += [DatasetStatus(d, 0.0, 0.0, 0, 0, int(n)) for d, n in sorted(refusals.items())]
        return out

    def recent(self, limit: int = 10) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The newest rounds and refusals, newest first."""
        with self._connect() as db:
            rounds = db.execute(
                "SELECT id, created_at, dataset, run_id, round, run_epsilon, dataset_epsilon, "
                "state FROM spends ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            refusals = db.execute(
                "SELECT id, created_at, dataset, run_id, round, reason FROM refusals "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return rounds, refusals

    # --- writing -------------------------------------------------------------------------

    def reserve(
        self,
        *,
        dataset: str,
        run_id: str,
        server_round: int,
        step: PrivacyStep,
        delta: float,
        accountant: str,
        max_run_epsilon: float,
        max_total_epsilon: float,
        budget_delta: float,
        fix_run_noise: bool = True,
    ) -> Reservation:
        """Check this round against the limits and record it, atomically.

        The run's epsilon uses the run's delta and accountant. The dataset's total is always
        measured the site's way, whatever each run chose: RDP at ``budget_delta``.
        A release before training (shared feature statistics) is recorded as round 0 with
        ``fix_run_noise=False``: it counts against every limit but does not fix the noise
        the run's DP-SGD rounds use.

        Raises:
            PrivacyBudgetExceeded: the round would pass a limit; the refusal is recorded.
        """
        with self._exclusive() as db:
            run = [*self._steps(db, dataset, run_id), step]
            total = [*self._steps(db, dataset, None), step]
            run_eps = epsilon_spent(run, delta=delta, accountant=accountant)
            total_eps = epsilon_spent(total, delta=budget_delta, accountant=BUDGET_ACCOUNTANT)
            reason = None
            if run_eps > max_run_epsilon + _TOLERANCE:
                reason = (
                    f"round {server_round} would bring run {run_id} to epsilon {run_eps:.3f} "
                    f"on dataset {dataset}, over this site's per-run limit {max_run_epsilon:g}"
                )
            elif total_eps > max_total_epsilon + _TOLERANCE:
                spent = epsilon_spent(total[:-1], delta=budget_delta, accountant=BUDGET_ACCOUNTANT)
                reason = (
                    f"round {server_round} would bring dataset {dataset} to epsilon "
                    f"{total_eps:.3f} over all runs (spent so far {spent:.3f}), over this "
                    f"site's budget {max_total_epsilon:g}"
                )
            if reason is not None:
                # Recorded in the same transaction; raised once it is committed.
                db.execute(
                    "INSERT INTO refusals (dataset, run_id, round, reason, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (dataset, run_id, server_round, reason, _now()),
                )
            else:
                if fix_run_noise:
                    db.execute(
                        "INSERT OR IGNORE INTO runs (dataset, run_id, noise_multiplier, "
                        "started_at) VALUES (?, ?, ?, ?)",
                        (dataset, run_id, step.noise_multiplier, _now()),
                    )
                cursor = db.execute(
                    "INSERT INTO spends (dataset, run_id, round, noise_multiplier, sample_rate, "
                    "steps, delta, accountant, run_epsilon, dataset_epsilon, state, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'reserved', ?)",
                    (
                        dataset,
                        run_id,
                        server_round,
                        step.noise_multiplier,
                        step.sample_rate,
                        step.steps,
                        delta,
                        accountant,
                        run_eps,
                        total_eps,
                        _now(),
                    ),
                )
                row_id = int(cursor.lastrowid or 0)
        if reason is not None:
            raise PrivacyBudgetExceeded(f"Refused by the site's privacy budget: {reason}.")
        return Reservation(row_id=row_id, run_epsilon=run_eps, dataset_epsilon=total_eps)

    def commit(self, reservation: Reservation) -> None:
        """Mark a reserved round spent (before its update leaves the site)."""
        with self._exclusive() as db:
            db.execute("UPDATE spends SET state = 'spent' WHERE id = ?", (reservation.row_id,))

    def release(self, reservation: Reservation) -> None:
        """Forget a reservation whose training failed before anything left the site."""
        with self._exclusive() as db:
            db.execute(
                "DELETE FROM spends WHERE id = ? AND state = 'reserved'", (reservation.row_id,)
            )
