"""The coordinator's Flower ServerApp: validated DP FedAvg, stored encrypted as it goes."""

from __future__ import annotations

import logging
import math
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedvault.common.device import seed_everything
from fedvault.common.errors import FederationError, FedvaultError
from fedvault.common.feature_stats import SharedScaling
from fedvault.common.nets import build_model
from fedvault.common.run_config import RunSettings
from fedvault.server.core.settings import get_settings
from fedvault.server.federation.checkpoints import lineage_for, record_round, starting_point
from fedvault.server.federation.evaluation import holdout_evaluator
from fedvault.server.federation.feature_stats import collect_feature_stats, with_scaling
from fedvault.server.federation.report import RunReporter
from fedvault.server.federation.strategy import RoundLog, ValidatingFedAvg, wait_for_sites
from fedvault.server.federation.validation import to_numpy
from fedvault.server.store.from_settings import open_store
from fedvault.server.store.service import ModelStore

__all__ = ["app", "run_federation"]

log = logging.getLogger("fedvault.server")
app = ServerApp()


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_federation(
    grid: Grid,
    settings: RunSettings,
    reporter: RunReporter,
    *,
    store: ModelStore,
    run_id: str,
) -> dict[str, Any]:
    """Run DP FedAvg to ``settings.num_server_rounds``, storing the model as it goes.

    The global model is stored encrypted every ``checkpoint-every`` rounds and after the
    last. A run with a ``run-name`` that already stored some rounds continues after the
    newest of them instead of starting over.
    """
    input_shape, num_classes = settings.model_io()
    seed_everything(settings.seed)
    model = build_model(settings.model, input_shape=input_shape, num_classes=num_classes)
    start = starting_point(store, settings, run_id=run_id, fresh=ArrayRecord(model.state_dict()))
    nodes = wait_for_sites(grid, minimum=settings.min_sites, timeout=settings.wait_timeout)
    reporter.emit(
        "started",
        sites=len(nodes),
        rounds=settings.num_server_rounds,
        run_id=run_id,
        first_round=start.first_round,
        parent=":".join(map(str, start.parent)) if start.parent else None,
        config=settings.to_run_config(),
    )
    if start.resumed:
        reporter.emit("resumed", run_id=run_id, round=start.first_round - 1)
    strategy = ValidatingFedAvg(
        min_sites=settings.min_sites,
        wait_timeout=settings.wait_timeout,
        max_update_norm=settings.max_update_norm,
        fraction_evaluate=settings.fraction_evaluate,
    )
    arrays, parent, sites = start.arrays, start.parent, start.sites
    scaling = None
    if settings.shared_stats:
        if start.resumed:
            raise FederationError(
                "A run with shared feature statistics cannot be resumed: its sites released "
                "them once and the scaling is not kept; start a new run (init-from the "
                "stored version to keep the weights)."
            )
        scaling, released = collect_feature_stats(grid, settings, nodes)
        record_round(sites, released)
        reporter.emit("feature-stats", sites=released.sites, refused=released.refused)
    holdout = holdout_evaluator(settings, scaling)
    metrics: MetricRecord | None = None
    last = settings.num_server_rounds
    for server_round in range(start.first_round, last + 1):
        arrays = _train_round(grid, strategy, settings, server_round, arrays, scaling)
        if settings.fraction_evaluate > 0:
            replies = grid.send_and_receive(
                with_scaling(
                    strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid),
                    scaling,
                ),
                timeout=settings.round_timeout,
            )
            strategy.aggregate_evaluate(server_round, replies)
        metrics = holdout(server_round, arrays) if holdout else None
        entry = strategy.rounds.get(server_round) or RoundLog(server_round)
        record_round(sites, entry)
        reporter.emit(
            "round",
            round=server_round,
            accuracy=_clean(metrics["accuracy"]) if metrics else None,
            loss=_clean(metrics["loss"]) if metrics else None,
            sites=entry.sites,
            rejected=entry.rejected,
            failed=entry.failed,
            refused=entry.refused,
        )
        if server_round % settings.checkpoint_every == 0 or server_round == last:
            lineage = lineage_for(
                settings,
                run_id=run_id,
                server_round=server_round,
                sites=sites,
                metrics=dict(metrics.items()) if metrics else None,
                parent=parent,
            )
            stored = store.put_arrays(
                settings.stored_model_name,
                to_numpy(arrays),
                lineage=lineage,
                creator=run_id,
                project=settings.project,
            )
            parent = (stored.model_id, stored.version)
            reporter.emit("stored", round=server_round, model=stored.ref, sha256=stored.sha256)
    summary = {
        "rounds": last,
        "run_id": run_id,
        "model": ":".join(map(str, parent)) if parent else None,
        "accuracy": _clean(metrics["accuracy"]) if metrics else None,
        "loss": _clean(metrics["loss"]) if metrics else None,
        "epsilon": {s.site: s.reported_epsilon for s in sites.values()},
        "run_epsilon": {
            s.site: s.to_record(settings.accountant)["epsilon"] for s in sites.values()
        },
    }
    reporter.emit("finished", **summary)
    return summary


def _train_round(
    grid: Grid,
    strategy: ValidatingFedAvg,
    settings: RunSettings,
    server_round: int,
    arrays: ArrayRecord,
    scaling: SharedScaling | None,
) -> ArrayRecord:
    replies = grid.send_and_receive(
        with_scaling(strategy.configure_train(server_round, arrays, ConfigRecord(), grid), scaling),
        timeout=settings.round_timeout,
    )
    aggregated, _ = strategy.aggregate_train(server_round, replies)
    return arrays if aggregated is None else aggregated


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls with the run's grid and configuration."""
    report_path = str(context.run_config.get("report-path", ""))
    reporter = RunReporter(report_path)
    try:
        settings = RunSettings.from_run_config(context.run_config)
        store = open_store(get_settings())
        run_id = settings.run_name or f"flower-{context.run_id}"
        try:
            run_federation(grid, settings, reporter, store=store, run_id=run_id)
        finally:
            store.engine.dispose()
    except FedvaultError as e:
        log.error("Run failed: %s", e)
        reporter.emit("failed", reason=str(e))
        raise
    except Exception as e:
        log.exception("Run failed unexpectedly")
        reporter.emit("failed", reason=f"internal error in the ServerApp: {type(e).__name__}: {e}")
        raise
