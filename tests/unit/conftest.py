"""Unit-test fixtures: the tiny model, written once per session (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.tiny import make_tiny


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama model directory (seed 0) shared by the whole session."""
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)
