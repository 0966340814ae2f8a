"""The Flower app definition fedvault submits matches the code it names."""

from __future__ import annotations

import tomllib

from fedvault.common.run_config import RunSettings
from fedvault.server.federation.app_definition import APP_DIR


def test_run_config_defaults_equal_the_code_defaults():
    config = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    assert config["tool"]["flwr"]["app"]["config"] == RunSettings().to_run_config()


def test_components_are_plain_app_assignments_in_installed_modules():
    components = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "components"
    ]
    from fedvault.client import app as client_app
    from fedvault.server.federation import app as server_app

    assert components == {
        "serverapp": "fedvault.server.federation.app:app",
        "clientapp": "fedvault.client.app:app",
    }
    assert type(server_app.app).__name__ == "ServerApp"
    assert type(client_app.app).__name__ == "ClientApp"
