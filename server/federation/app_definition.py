"""Where the Flower app definition (the ``pyproject.toml`` that ``flwr run`` reads) lives."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["APP_DIR"]

# The ServerApp and ClientApp it names are imported only by Flower's own processes, so
# starting a run needs this path and nothing of torch.
APP_DIR = Path(str(files("fedvault.server.federation") / "flwr_app"))
