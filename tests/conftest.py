"""Shared fixtures: in-process Flower messages and contexts, run settings factories."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, RecordDict

from fedvault.common.nets import build_model
from fedvault.common.run_config import RunSettings

# Opacus's accountants warn about alpha ranges and seeded RNGs; neither is what a test pins.
warnings.filterwarnings("ignore", category=UserWarning, module="opacus")


def flower_message(
    content: RecordDict,
    *,
    message_type: str = MessageType.TRAIN,
    dst_node_id: int = 7,
    src_node_id: int = 0,
    message_id: str = "msg-1",
) -> Message:
    """A message as a SuperNode would hand it to the ClientApp (or a reply, to the server)."""
    metadata = Metadata(
        run_id=1,
        message_id=message_id,
        src_node_id=src_node_id,
        dst_node_id=dst_node_id,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600,
        message_type=message_type,
    )
    return Message(content=content, metadata=metadata)


def train_message(
    settings: RunSettings,
    server_round: int,
    arrays: ArrayRecord | None = None,
    message_type: str = MessageType.TRAIN,
) -> Message:
    if arrays is None:
        shape, classes = settings.model_io()
        arrays = ArrayRecord(
            build_model(settings.model, input_shape=shape, num_classes=classes).state_dict()
        )
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
    return flower_message(content, message_type=message_type)


def site_context(
    settings: RunSettings, node_config: Mapping[str, Any], state: RecordDict | None = None
) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config=dict(node_config),
        state=state if state is not None else RecordDict(),
        run_config=settings.to_run_config(),
    )


@pytest.fixture(scope="session")
def fast_settings() -> RunSettings:
    """Small, quick DP settings: 2 rounds on digits with the CNN."""
    return RunSettings(
        num_server_rounds=2, batch_size=64, target_epsilon=4.0, accountant="rdp", min_sites=2
    )
