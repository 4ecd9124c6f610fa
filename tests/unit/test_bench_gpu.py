"""bench/gpu.py's CPU-checkable parts: the one-stream step profile and its report section."""

from __future__ import annotations

from pathlib import Path

from bench.gpu import Report, markdown, profile_engine
from workers.engines.torch_engine import TorchEngine


def test_profile_engine_reports_a_step_and_leaves_the_engine_idle(tiny_model_dir: Path) -> None:
    engine = TorchEngine(device="cpu", max_batch=2, max_seq_len=512)
    engine.load(tiny_model_dir)
    profile = profile_engine(engine)
    assert engine.active == 0
    assert profile["wall_ms_per_step"] > 0
    assert profile["gpu_kernel_ms_per_step"] == 0  # no CUDA here
    assert "aten::" in profile["top_cpu_ops"]
    report = Report(profiles={"torch/engine": profile})
    assert "## one-stream step profile: torch/engine" in markdown(report)
