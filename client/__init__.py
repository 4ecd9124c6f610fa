"""Python clients for the Universal Model Launcher (filled in by the clients issue)."""

__all__: list[str] = []
