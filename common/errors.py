"""The one error tree of fedvault: every error a user can see derives from FedvaultError."""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "ApiError",
    "AuthenticationFailed",
    "ConfigError",
    "DataError",
    "FederationError",
    "FedvaultError",
    "IntegrityError",
    "KeyMaterialError",
    "NotFound",
    "PolicyDenied",
    "PolicyRefused",
    "PrivacyBudgetExceeded",
    "PrivacyConfigError",
    "ProcessError",
    "RateLimited",
    "StorageError",
    "UpdateRejected",
]


class FedvaultError(Exception):
    """Base of every error fedvault raises on purpose.

    The message says what was wrong and, where it can, what to do about it.
    """


class ConfigError(FedvaultError, ValueError):
    """A setting, option or run configuration value is invalid."""


class PrivacyConfigError(ConfigError):
    """A differential-privacy parameter is invalid (caught before any training)."""


class DataError(FedvaultError, ValueError):
    """A site's data file is missing, malformed or does not fit the model."""


class UpdateRejected(FedvaultError, ValueError):
    """A model update from a site failed validation and was not aggregated."""


class FederationError(FedvaultError):
    """The federation could not proceed (too few sites, a timeout, a failed run)."""


class ProcessError(FedvaultError):
    """A process fedvault started failed to start, died, or could not be stopped."""


class IntegrityError(FedvaultError):
    """Stored bytes failed authentication or their hash: tampered, truncated or misplaced."""


class KeyMaterialError(FedvaultError):
    """A key-encryption key is missing, retired, unreadable or stored insecurely."""


class NotFound(FedvaultError, LookupError):
    """A named object (model, version, run) does not exist."""


class StorageError(FedvaultError):
    """Writing to the data directory failed (e.g. a full disk); nothing was stored."""


class PolicyRefused(FedvaultError):
    """A site's own policy refuses this round (model, project, rounds, DP parameters)."""


class PrivacyBudgetExceeded(PolicyRefused):
    """Training this round would take a site past one of its epsilon limits."""


class AuthenticationFailed(FedvaultError):
    """No credentials, or credentials that do not identify an active principal.

    One message for every cause (unknown, wrong, expired, revoked), so an answer never tells
    an attacker which tokens exist.
    """


class PolicyDenied(FedvaultError):
    """The access policies do not permit this principal this action on this resource."""


class AlreadyExists(FedvaultError, ValueError):
    """An object with this name or key exists already."""


class RateLimited(FedvaultError):
    """Too many attempts from one source; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ApiError(FedvaultError):
    """The admin API refused a request, answered with an error, or could not be reached.

    Attributes:
        status: the HTTP status, or None when no answer came.
        code: the API's error code (``policy_denied``, ``not_found`` ...), if it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code
