"""The coordinator: Flower ServerApp, strategy and update validation."""
