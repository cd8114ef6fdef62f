"""The poem model bundled with poemctl (poemctl/bundled/poem.safetensors)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from poemctl import checkpoint
from poemctl.cli import app
from poemctl.prosody import Prosody

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_model_is_small_half_precision_and_self_describing():
    path = checkpoint.BUNDLED
    assert path.is_file() and path.stat().st_size <= 10_000_000
    with safe_open(path, "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118
    model, meta = checkpoint.load(path)
    data = meta.config.data
    assert data.keep_commas and data.control_tokens and data.rhyme_marks and data.corpus == "data/chinese-poetry"
    assert len(meta.vocab) == model.cfg.vocab_size > 7000
    assert meta.logit_adjust == pytest.approx(0.4)  # docs/model-card.md: the tilt that makes it varied


@pytest.mark.slow
def test_a_fresh_folder_gets_a_poem_from_the_bundled_model(tmp_path):
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "poemctl", "sample", "月", "--lines", "4", "--num", "20", "--seed", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bundled" in proc.stderr
    poems = [p.split("\n") for p in proc.stdout.strip().split("\n\n")]
    assert len(poems) == 20
    for p in poems:
        assert len(p) == 4 and p[0][0] == "月" and all(len(line) == 8 for line in p)
        assert [line[-1] for line in p] == ["，", "。", "，", "。"]
    prosody = Prosody()
    rhymed = sum(prosody.rhymed([line[:-1] for line in p]) for p in poems)
    assert rhymed >= 14  # about 97% in the model card's 1,000; 20 at chance (5%) would give 1


def _readme_poems(path: Path) -> tuple[list[str], list[str]]:
    """The README's command line for its three poems, and the poems (side by side there) one string each."""
    text = path.read_text(encoding="utf-8")
    command = re.search(r"`(poemctl sample [^`]+)`, on a fresh install", text).group(1).split()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    月"))
    rows = [line.split() for line in lines[start : start + 4]]
    return command, ["".join(row[i] for row in rows) for i in range(3)]


def test_the_readme_shows_what_the_bundled_model_writes(tmp_path, monkeypatch):
    command, poems = _readme_poems(ROOT / "README.md")
    monkeypatch.chdir(tmp_path)  # no runs/ here: the bundled model
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    written = ["".join(p.split()) for p in result.stdout.strip().split("\n\n")]
    assert written == poems
