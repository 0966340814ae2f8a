"""What ServerApp and ClientApp put in their messages: record keys and error codes."""

from __future__ import annotations

from enum import IntEnum

from fedvault.common.errors import (
    ConfigError,
    DataError,
    FedvaultError,
    PolicyRefused,
    PrivacyConfigError,
)

__all__ = [
    "ARRAYS",
    "CONFIG",
    "METRICS",
    "SCALING",
    "SITE",
    "STATS",
    "ReplyError",
    "error_code_for",
]

ARRAYS = "arrays"  # ArrayRecord: model weights (both directions)
CONFIG = "config"  # ConfigRecord: round settings from the server
METRICS = "metrics"  # MetricRecord: a site's numbers in its reply
SITE = "site"  # ConfigRecord: the site's self-reported name
SCALING = "feature-scaling"  # ArrayRecord: the shared centre ("center"), server to sites
STATS = "feature-sum"  # ArrayRecord: a site's noisy feature sum ("sum"), in its query reply


class ReplyError(IntEnum):
    """Error codes a site puts in an error reply instead of a stack trace."""

    CONFIG = 4001  # the run's configuration is invalid for this site
    DATA = 4002  # the site's data cannot be read or does not fit the model
    PRIVACY = 4003  # a DP parameter is invalid
    REFUSED = 4004  # the site's policy or privacy budget refuses the round
    INTERNAL = 5000  # anything unexpected; details stay in the site's own log


def error_code_for(error: Exception) -> ReplyError:
    """The reply code for an exception raised while handling a message."""
    if isinstance(error, PolicyRefused):
        return ReplyError.REFUSED
    if isinstance(error, PrivacyConfigError):
        return ReplyError.PRIVACY
    if isinstance(error, ConfigError):
        return ReplyError.CONFIG
    if isinstance(error, DataError):
        return ReplyError.DATA
    if isinstance(error, FedvaultError):
        return ReplyError.CONFIG
    return ReplyError.INTERNAL
