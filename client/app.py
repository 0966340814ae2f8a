"""The site's Flower ClientApp: DP-SGD training on local data, evaluation, privacy metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedvault.client.local_round import load_global_model, train_round
from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.shared_stats import release_feature_sum
from fedvault.client.site_data import SiteData, load_site_data
from fedvault.client.site_guard import Site, guarded_release, guarded_round, open_site
from fedvault.common.device import pick_device
from fedvault.common.errors import ConfigError
from fedvault.common.evaluation import evaluate
from fedvault.common.feature_stats import SharedScaling
from fedvault.common.protocol import ARRAYS, CONFIG, METRICS, SCALING, SITE, STATS, error_code_for
from fedvault.common.run_config import RunSettings

__all__ = ["app"]

log = logging.getLogger("fedvault.client")
_T = TypeVar("_T")
app = ClientApp()

Handler = Callable[[Message, Context], Message]


def _answer_errors(handler: Handler) -> Handler:
    """Turn any failure into an error reply with a readable reason, never a stack trace."""

    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as e:
            code = error_code_for(e)
            if code.name == "INTERNAL":
                log.exception("Unexpected failure while handling %s", msg.metadata.message_type)
                reason = f"internal error at the site ({type(e).__name__}); see the site's log"
            elif code.name == "DATA":
                # The details can quote the site's records or paths: they stay at the site.
                log.error("Refusing %s: %s", msg.metadata.message_type, e)
                reason = (
                    "the site's data cannot be used for this run (missing, malformed, or not "
                    "matching the model's input or classes); the site's log has the details"
                )
            else:
                log.error("Refusing %s: %s", msg.metadata.message_type, e)
                reason = str(e)
            return Message(Error(code=int(code), reason=reason), reply_to=msg)

    wrapped.__name__ = handler.__name__
    return wrapped


def _scaling(msg: Message, settings: RunSettings) -> SharedScaling | None:
    """The shared scaling the server sent, required when the run uses shared statistics."""
    if not settings.shared_stats:
        return None
    if SCALING not in msg.content.array_records:
        raise ConfigError(
            "This run scales features by shared statistics (feature-stats-noise > 0) but "
            "the server sent none; the ServerApp must collect them before training."
        )
    center = msg.content.array_records[SCALING]["center"].numpy()
    return SharedScaling(transform=settings.feature_transform, center=center)


def _setup(
    msg: Message, context: Context, *, scaled: bool = True
) -> tuple[RunSettings, SiteData, int]:
    settings = RunSettings.from_run_config(context.run_config)
    input_shape, num_classes = settings.model_io()
    data = load_site_data(
        context.node_config,
        settings,
        input_shape=input_shape,
        num_classes=num_classes,
        scaling=_scaling(msg, settings) if scaled else None,
    )
    server_round = int(msg.content[CONFIG]["server-round"])  # type: ignore[arg-type]
    return settings, data, server_round


def _protected(
    context: Context,
    *,
    guarded: Callable[[Site], _T],
    insecure: Callable[[RunPrivacy], _T],
) -> _T:
    """Spend privacy under the site's policy and ledger; or, only where a test set
    ``insecure-no-ledger``, with spend tracked for this run alone."""
    site = open_site(context.node_config)
    if site is not None:
        return guarded(site)
    if context.node_config.get("insecure-no-ledger") is True:
        log.warning(
            "INSECURE: insecure-no-ledger is set; no site policy or privacy ledger applies "
            "and this site's spend is not kept beyond this run."
        )
        privacy = RunPrivacy.load(context.state)
        result = insecure(privacy)
        privacy.save(context.state)
        return result
    raise ConfigError(
        "This SuperNode has no site-dir, so no site policy or privacy ledger can protect "
        "its data; start it with `fedvault site run` (or `fedvault site init` first)."
    )


@app.query()
@_answer_errors
def share_feature_stats(msg: Message, context: Context) -> Message:
    """Release this site's noisy feature sum for the run's shared scaling (once per run)."""
    settings, data, _ = _setup(msg, context, scaled=False)
    partition = int(context.node_config.get("partition-id", 0))
    release = _protected(
        context,
        guarded=lambda site: guarded_release(
            site,
            settings=settings,
            data=data,
            run_id=settings.run_name or f"flower-{msg.metadata.run_id}",
            partition=partition,
        ),
        insecure=lambda privacy: release_feature_sum(
            settings=settings, data=data, privacy=privacy, partition=partition
        ),
    )
    content = RecordDict(
        {
            STATS: ArrayRecord({"sum": Array(release.feature_sum)}),
            METRICS: MetricRecord(
                {
                    "num-examples": release.num_examples,
                    "epsilon": release.epsilon,
                    "delta": release.delta,
                    "noise-multiplier": settings.feature_stats_noise,
                    "sample-rate": 1.0,
                    "steps": 1,
                }
            ),
            SITE: ConfigRecord({"name": data.name}),
        }
    )
    return Message(content, reply_to=msg)


@app.train()
@_answer_errors
def train(msg: Message, context: Context) -> Message:
    """Train the received global model with DP-SGD; reply with weights and privacy spend."""
    settings, data, server_round = _setup(msg, context)
    weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    device = pick_device(str(context.node_config.get("device", "auto")))
    partition = int(context.node_config.get("partition-id", 0))
    outcome = _protected(
        context,
        guarded=lambda site: guarded_round(
            site,
            settings=settings,
            data=data,
            run_id=settings.run_name or f"flower-{msg.metadata.run_id}",
            server_round=server_round,
            global_weights=weights,
            device=device,
            partition=partition,
        ),
        insecure=lambda privacy: train_round(
            settings=settings,
            data=data,
            global_weights=weights,
            server_round=server_round,
            privacy=privacy,
            device=device,
            partition=partition,
        ),
    )
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(outcome.state_dict),
            METRICS: MetricRecord(outcome.metrics),
            SITE: ConfigRecord({"name": data.name}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
@_answer_errors
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's own test split."""
    settings, data, server_round = _setup(msg, context)
    site = open_site(context.node_config)
    if site is not None:
        site.policy.check_run(settings, server_round=server_round)
    device = pick_device(str(context.node_config.get("device", "auto")))
    model = load_global_model(settings, msg.content.array_records[ARRAYS].to_torch_state_dict())
    loss, accuracy = evaluate(model, data.test, device=device)
    metrics = MetricRecord(
        {"num-examples": len(data.test), "eval-loss": loss, "eval-accuracy": accuracy}
    )
    return Message(
        RecordDict({METRICS: metrics, SITE: ConfigRecord({"name": data.name})}), reply_to=msg
    )
