"""GPU test fixtures: the tiny model on disk, engines on ``cuda:0``, a greedy step driver.

Every test here needs CUDA and is skipped without it; fixtures import exllamav2 and the
engines lazily, so the CPU suite never imports exllamav2 or touches a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.engines.base import Engine

MAX_SEQ_LEN = 512
"""Per-job context for GPU tests: prompt plus generated tokens stay far below it."""


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def exl_engine(tiny_dir: Path) -> Iterator[Engine]:
    """One loaded ExLlamaV2Engine for the session (loading JIT-builds nothing here)."""
    pytest.importorskip("exllamav2")
    from workers.engines.exllamav2 import ExLlamaV2Engine

    engine = ExLlamaV2Engine(device="cuda:0", max_batch=32, max_seq_len=MAX_SEQ_LEN)
    engine.load(tiny_dir)
    yield engine
    engine.unload()
