"""Access policies (Cedar) and their schema, and the default site policy: data, not code."""

from __future__ import annotations

from importlib.resources import files

__all__ = ["SITE_POLICY_FILE", "default_site_policy_text"]

SITE_POLICY_FILE = "site-policy.toml"


def default_site_policy_text() -> str:
    """The documented default site policy, ``policies/site-policy.toml``: its only copy."""
    return files(__name__).joinpath(SITE_POLICY_FILE).read_text(encoding="utf-8")
