"""placeholder"""
def demo() -> None:
    """Run a local federation."""
