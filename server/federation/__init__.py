"""The Flower ServerApp: rounds, strategy, update validation, evaluation, checkpoints, report."""
