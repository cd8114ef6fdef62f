"""Runs over several machines, two of them on this host: `accelerate launch --num_machines 2 --machine_rank
0|1`, each machine one process. Equal to one process with the doubled batch; a lost machine stops the other in
seconds with one line, and --resume on both continues from the last state."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.test_train import ARGS, _same_weights, free_port, losses, poemctl

pytestmark = pytest.mark.slow


def _machines(*args, port):
    """Both machines' launches of poemctl args, on 127.0.0.1, each in a process group of its own."""
    return [
        poemctl(
            *args,
            start_new_session=True,
            launch=[
                "--multi_gpu",
                "--num_machines",
                "2",
                "--num_processes",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                str(port),
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
            ],
        )
        for rank in (0, 1)
    ]


def test_two_machines_equal_one_process_with_twice_the_batch(tmp_path):
    common = [*ARGS, "--max-steps", "20", "--cache-dir", tmp_path / "cache"]
    machines = _machines("train", *common, "--batch-size", "8", "--out", tmp_path / "two", port=free_port())
    outputs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs
    one = poemctl("train", *common, "--batch-size", "16", "--out", tmp_path / "one")
    assert one.wait(timeout=300) == 0
    (a, run), (b, _) = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert (run / "best.safetensors").is_file()
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert "20 steps;" in outputs[0] and "20 steps;" not in outputs[1]  # only the main process reports
    assert len(list((tmp_path / "two").iterdir())) == 1  # and writes


def test_a_lost_machine_stops_the_other_in_seconds_and_both_resume(tmp_path):
    common = [*ARGS, "--max-steps", "600", "--epochs", "100", "--save-every", "7", "--cache-dir", tmp_path / "cache"]
    # The reference: the same two machines, never interrupted (one process drifts from two over 600 steps).
    ref = _machines("train", *common, "--batch-size", "8", "--out", tmp_path / "ref", port=free_port())
    for m in ref:
        m.communicate(timeout=300)
    assert [m.returncode for m in ref] == [0, 0]
    machines = _machines("train", *common, "--batch-size", "8", "--out", tmp_path / "two", port=free_port())
    deadline, metrics = time.time() + 240, None
    while time.time() < deadline and metrics is None:  # lose machine 1 once the run is well under way
        found = list((tmp_path / "two").glob("*/metrics.jsonl"))
        if found and found[0].read_text().count('"loss"') >= 30:
            metrics = found[0]
        time.sleep(0.02)
    assert metrics is not None
    # Machine 1 is lost: its worker (in a process group of its own, as torchrun starts it) and its launcher.
    workers = subprocess.run(["pgrep", "-P", str(machines[1].pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 1
    os.kill(int(workers[0]), signal.SIGKILL)
    machines[1].kill()
    lost = time.time()
    output = machines[0].communicate(timeout=120)[0]
    machines[1].wait(timeout=60)
    assert time.time() - lost < 60  # not the 30-minute collective timeout
    assert machines[0].returncode != 0
    stopped = [line for line in output.splitlines() if "stopped:" in line]
    assert len(stopped) == 1, output
    assert "lost another process of the run" in stopped[0] and "Restart every machine with" in stopped[0]
    assert "[rank0]: Traceback" not in output
    run = metrics.parent
    resumed = _machines("train", "--resume", run, port=free_port())
    outputs = [m.communicate(timeout=300)[0] for m in resumed]
    assert [m.returncode for m in resumed] == [0, 0], outputs
    (ref_run,) = (tmp_path / "ref").iterdir()
    _same_weights(ref_run / "last.safetensors", run / "last.safetensors")
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 601))  # no step lost or logged twice
