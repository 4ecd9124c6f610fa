"""ops/gpu-check.sh keeps inside the issue's 8 minutes: its stage time boxes add up to 480 s."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "ops" / "gpu-check.sh"


def test_stage_boxes_fit_eight_minutes() -> None:
    boxes = {
        name: int(seconds)
        for name, seconds in re.findall(r"^\s*stage (\w+) (\d+) ", SCRIPT.read_text(), re.M)
    }
    assert set(boxes) == {"install", "env", "jit", "pytest", "bench", "stack"}
    assert sum(boxes.values()) <= 8 * 60, boxes


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
