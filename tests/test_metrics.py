import json

import pytest

from poemctl.errors import PoemctlError
from poemctl.metrics import MetricsLog, read_metrics


def test_write_read_and_cut_short_line(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.write(step=step, loss=1.0 / step)
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')  # a crash mid-line
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_resume_drops_records_after_the_saved_step(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.write(step=step)
    log.close()
    MetricsLog(tmp_path, keep_until_step=3).write(step=4)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]


def test_missing_or_empty(tmp_path):
    with pytest.raises(PoemctlError, match="no metrics"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PoemctlError, match="holds no records"):
        read_metrics(tmp_path)
