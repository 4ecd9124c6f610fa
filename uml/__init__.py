"""The ``uml`` command line and the developer runner."""
