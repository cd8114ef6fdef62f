"""poemctl/api.py: the library, against what the command line writes; docs/api.md's example runs."""

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import poemctl
from poemctl.cli import app
from tests.conftest import ROOT

runner = CliRunner()


def test_load_without_a_run_is_the_bundled_model(tmp_path):
    poet = poemctl.load(runs=tmp_path / "runs")
    assert poet.bundled and poet.path.name == "poem.safetensors"
    (poem,) = poet.write("月", seed=0)
    lines = poem.split("\n")
    assert [len(x) for x in lines] == [8] * 4 and lines[0][0] == "月"
    assert [x[-1] for x in lines] == ["，", "。", "，", "。"]


def test_write_equals_the_command_lines_sample(trained):
    ckpt = trained / "best.safetensors"
    poet = poemctl.load(ckpt)
    assert not poet.bundled
    poems = poet.write("山", num=3, seed=7, chars=5)
    result = runner.invoke(app, ["sample", "山", "--ckpt", str(ckpt), "--num", "3", "--seed", "7", "--chars", "5"])
    assert result.exit_code == 0
    assert result.output.strip() == "\n\n".join(poems)


def test_perplexity_equals_the_command_lines(trained, tmp_path):
    texts = ["床前明月光，疑是地上霜。举头望明月，低头思故乡。", "白日依山尽，黄河入海流。"]
    poet = poemctl.load(trained / "best.safetensors")
    (tmp_path / "p.txt").write_text("\n".join(texts), encoding="utf-8")
    result = runner.invoke(app, ["perplexity", str(trained / "best.safetensors"), "--text", str(tmp_path / "p.txt")])
    cli = float(re.search(r"perplexity ([\d.]+)", result.output).group(1))
    assert poet.perplexity(texts) == pytest.approx(cli, abs=0.01)
    assert poet.perplexity(texts[0]) != poet.perplexity(texts)


def test_bad_input_raises_the_one_line_error(trained, tmp_path):
    with pytest.raises(poemctl.PoemctlError, match="no checkpoint"):
        poemctl.load(tmp_path / "none.safetensors")
    with pytest.raises(poemctl.PoemctlError, match="--chars must be 5 or 7, got 6"):
        poemctl.load(trained / "best.safetensors").write(chars=6)


def test_importing_poemctl_does_not_import_torch():
    code = "import sys, poemctl; assert poemctl.__version__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_example_in_docs_api_md_runs(tmp_path):
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(.*?)```", text, re.S)
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().split("\n")
    assert out[0].startswith("月") and out[-1].endswith("True 384")
    assert float(out[-2]) > 1
