"""Every typer group of the server side: `server`, `audit`, `keys`, `models`, `demo`."""
