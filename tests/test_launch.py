"""`accelerate launch poemctl train` as users type it, in a real subprocess from the repository root."""

import os
import subprocess
import sys

import pytest

from tests.conftest import CORPUS, ROOT, TINY_ARGS


@pytest.mark.slow
def test_accelerate_launch_from_repo_root(tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--cpu",
        "poemctl",
        "train",
        *TINY_ARGS,
        "--max-steps",
        "4",
        "--corpus",
        str(CORPUS),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "runs"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "best.safetensors").is_file()
    assert "4 steps" in proc.stdout


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "poemctl", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "train" in proc.stdout
