"""The coordinator's Flower ServerApp: validated DP FedAvg with per-round progress."""

from __future__ import annotations

import logging
import math
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedvault.common.device import seed_everything
from fedvault.common.errors import FedvaultError
from fedvault.common.nets import build_model
from fedvault.common.run_config import RunSettings
from fedvault.server.evaluation import holdout_evaluator
from fedvault.server.report import RunReporter
from fedvault.server.strategy import ValidatingFedAvg, wait_for_sites

__all__ = ["app", "run_federation"]

log = logging.getLogger("fedvault.server")
app = ServerApp()


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_federation(grid: Grid, settings: RunSettings, reporter: RunReporter) -> dict[str, Any]:
    """Run DP FedAvg for ``settings.num_server_rounds`` rounds; return the final summary."""
    input_shape, num_classes = settings.model_io()
    seed_everything(settings.seed)
    model = build_model(settings.model, input_shape=input_shape, num_classes=num_classes)
    nodes = wait_for_sites(grid, minimum=settings.min_sites, timeout=settings.wait_timeout)
    reporter.emit(
        "started",
        sites=len(nodes),
        rounds=settings.num_server_rounds,
        config=settings.to_run_config(),
    )
    strategy = ValidatingFedAvg(
        min_sites=settings.min_sites,
        wait_timeout=settings.wait_timeout,
        max_update_norm=settings.max_update_norm,
        fraction_evaluate=settings.fraction_evaluate,
    )
    holdout = holdout_evaluator(settings)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        metrics = holdout(server_round, arrays) if holdout else None
        if server_round > 0:
            entry = strategy.rounds.get(server_round)
            reporter.emit(
                "round",
                round=server_round,
                accuracy=_clean(metrics["accuracy"]) if metrics else None,
                loss=_clean(metrics["loss"]) if metrics else None,
                sites=entry.sites if entry else [],
                rejected=entry.rejected if entry else [],
                failed=entry.failed if entry else [],
            )
        return metrics

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=settings.num_server_rounds,
        timeout=settings.round_timeout,
        evaluate_fn=evaluate_fn,
    )
    final = result.evaluate_metrics_serverapp.get(settings.num_server_rounds)
    epsilons: dict[str, float] = {}
    for entry in strategy.rounds.values():
        for site in entry.sites:
            epsilons[site["site"]] = site["epsilon"]
    summary = {
        "rounds": settings.num_server_rounds,
        "accuracy": _clean(final["accuracy"]) if final else None,
        "loss": _clean(final["loss"]) if final else None,
        "epsilon": epsilons,
    }
    reporter.emit("finished", **summary)
    return summary


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls with the run's grid and configuration."""
    report_path = str(context.run_config.get("report-path", ""))
    reporter = RunReporter(report_path)
    try:
        settings = RunSettings.from_run_config(context.run_config)
        run_federation(grid, settings, reporter)
    except FedvaultError as e:
        log.error("Run failed: %s", e)
        reporter.emit("failed", reason=str(e))
        raise
    except Exception as e:
        log.exception("Run failed unexpectedly")
        reporter.emit("failed", reason=f"internal error in the ServerApp: {type(e).__name__}: {e}")
        raise
