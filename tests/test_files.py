"""files.py: atomic writes that reach the disk, and one-line errors when the disk is full."""

import os
import resource
import signal
import subprocess
import sys

import pytest

from poemctl import files
from poemctl.errors import PoemctlError
from tests.conftest import CORPUS, ROOT, TINY_ARGS


def test_data_and_rename_are_synced_before_returning(tmp_path, monkeypatch):
    events = []
    real_replace = os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "x.bin"
    files.atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(str(tmp_path / ".x.bin.")) and events[2][1] == str(tmp_path)


def test_a_safetensors_write_error_is_one_line(tmp_path):
    def full(tmp):
        raise files.SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    with pytest.raises(PoemctlError, match=r"^cannot write .*ckpt.safetensors: No space left on device$"):
        files.atomic_write(tmp_path / "ckpt.safetensors", full)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def _small_files(limit):
    def limit_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_size


def test_safetensors_itself_fails_on_a_file_size_limit(tmp_path):
    code = (
        "import sys, torch; from safetensors.torch import save_file; save_file({'w': torch.zeros(10**5)}, sys.argv[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a")],
        preexec_fn=_small_files(100_000),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "SafetensorError" in done.stderr  # what the limit stands for: a full disk


@pytest.mark.slow
def test_a_full_disk_during_training_is_a_one_line_error(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    args = [*TINY_ARGS, "--hidden", "64", "--max-steps", "2", "--corpus", CORPUS, "--cache-dir", tmp_path / "c"]
    # The encoded corpus (400 rows) fits under the limit; a checkpoint of this model does not.
    done = subprocess.run(
        [os.path.join(bin_dir, "poemctl"), "train", *map(str, args), "--out", str(tmp_path / "r")],
        cwd=ROOT,
        preexec_fn=_small_files(300_000),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot write ")
    assert "File too large" in done.stderr
    run = next((tmp_path / "r").iterdir())
    assert not list(run.glob(".*.tmp"))  # nothing half-written left
