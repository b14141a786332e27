"""The three tutorials of the docs site (docs/tutorials/*.py) run as they are, so the pages
(which include these files) cannot rot: each is executed in a fresh process on its own
small data, and its own assertions (Lava 0 mismatches, verify PASS, PyTorch == chip for
the fine-tuned run) must hold."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"


@pytest.mark.parametrize("script, expected", [
    ("train_deploy_loihi2.py", ["PASS: quantized accuracy", "0 mismatches"]),
    ("import_nir_deploy.py", ["NIR reference executor: accuracy", "PASS: quantized accuracy"]),
    ("finetune_4bit.py", ["chosen: ", "verify: PASS, agreement 1.0000, spikes equal True"]),
])
def test_tutorial_runs(script, expected, tmp_path):
    env = {**os.environ, "NEURODELAY_CACHE": str(tmp_path / "cache"),
           "NEURODELAY_PROGRESS": "never"}
    p = subprocess.run([sys.executable, str(TUTORIALS / script), str(tmp_path / "work")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    for text in expected:
        assert text in p.stdout, f"{script}: {text!r} not in its output:\n{p.stdout[-3000:]}"
