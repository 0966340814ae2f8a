"""The site's Flower ClientApp: DP-SGD training on local data, evaluation, privacy metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.site_data import SiteData, load_site_data
from fedvault.client.training import steps_per_epoch, train_local
from fedvault.common.device import pick_device, seed_everything
from fedvault.common.evaluation import evaluate
from fedvault.common.nets import build_model
from fedvault.common.privacy import PrivacyStep, epsilon_spent, noise_for_target
from fedvault.common.protocol import ARRAYS, CONFIG, METRICS, SITE, error_code_for
from fedvault.common.run_config import RunSettings

__all__ = ["app"]

log = logging.getLogger("fedvault.client")
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
            else:
                log.error("Refusing %s: %s", msg.metadata.message_type, e)
                reason = str(e)
            return Message(Error(code=int(code), reason=reason), reply_to=msg)

    wrapped.__name__ = handler.__name__
    return wrapped


def _setup(msg: Message, context: Context) -> tuple[RunSettings, SiteData, int]:
    settings = RunSettings.from_run_config(context.run_config)
    input_shape, num_classes = settings.model_io()
    data = load_site_data(
        context.node_config, settings, input_shape=input_shape, num_classes=num_classes
    )
    server_round = int(msg.content[CONFIG]["server-round"])  # type: ignore[arg-type]
    return settings, data, server_round


def _model(settings: RunSettings, arrays: ArrayRecord):  # type: ignore[no-untyped-def]
    input_shape, num_classes = settings.model_io()
    model = build_model(settings.model, input_shape=input_shape, num_classes=num_classes)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


@app.train()
@_answer_errors
def train(msg: Message, context: Context) -> Message:
    """Train the received global model with DP-SGD; reply with weights and privacy spend."""
    settings, data, server_round = _setup(msg, context)
    dp = settings.dp
    n = len(data.train)
    delta = dp.delta_for(n)
    privacy = RunPrivacy.load(context.state)
    if privacy.noise_multiplier is None:
        if dp.noise_multiplier is not None:
            privacy.noise_multiplier = dp.noise_multiplier
        else:
            assert dp.target_epsilon is not None  # DPConfig guarantees one of the two
            planned = (
                settings.num_server_rounds
                * settings.local_epochs
                * steps_per_epoch(n, settings.batch_size)
            )
            privacy.noise_multiplier = noise_for_target(
                target_epsilon=dp.target_epsilon,
                delta=delta,
                sample_rate=1.0 / steps_per_epoch(n, settings.batch_size),
                steps=planned,
                accountant=dp.accountant,
            )
    device = pick_device(str(context.node_config.get("device", "auto")))
    # Same seed, round and partition: same batches and noise (see README on randomness).
    partition = int(context.node_config.get("partition-id", 0))
    generator = seed_everything(settings.seed * 1_000_003 + server_round * 1009 + partition)
    model = _model(settings, msg.content[ARRAYS])  # type: ignore[arg-type]
    result = train_local(
        model=model,
        data=data.train,
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        momentum=settings.momentum,
        noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        device=device,
        generator=generator,
        grad_sample_mode=settings.grad_sample_mode,
    )
    privacy.history.append(PrivacyStep(privacy.noise_multiplier, result.sample_rate, result.steps))
    privacy.save(context.state)
    epsilon = epsilon_spent(privacy.history, delta=delta, accountant=dp.accountant)
    log.info(
        "Round %d at %s: %d steps, loss %.4f, epsilon %.3f (delta %.1e)",
        server_round,
        data.name,
        result.steps,
        result.loss,
        epsilon,
        delta,
    )
    metrics = MetricRecord(
        {
            "num-examples": n,
            "train-loss": result.loss,
            "epsilon": epsilon,
            "delta": delta,
            "noise-multiplier": privacy.noise_multiplier,
            "sample-rate": result.sample_rate,
            "steps": result.steps,
            "total-steps": privacy.total_steps,
            "max-grad-norm": dp.max_grad_norm,
        }
    )
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(model.state_dict()),
            METRICS: metrics,
            SITE: ConfigRecord({"name": data.name}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
@_answer_errors
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's own test split."""
    settings, data, _ = _setup(msg, context)
    device = pick_device(str(context.node_config.get("device", "auto")))
    model = _model(settings, msg.content[ARRAYS])  # type: ignore[arg-type]
    loss, accuracy = evaluate(model, data.test, device=device)
    metrics = MetricRecord(
        {"num-examples": len(data.test), "eval-loss": loss, "eval-accuracy": accuracy}
    )
    return Message(
        RecordDict({METRICS: metrics, SITE: ConfigRecord({"name": data.name})}), reply_to=msg
    )
