"""evaluate.py: N poems from a checkpoint, scored."""

from poemctl import checkpoint
from poemctl.config import SampleConfig
from poemctl.evaluate import STARTS, evaluate


def test_poems_are_shared_among_the_start_characters(trained):
    model, meta = checkpoint.load(trained / "best.safetensors")
    stats = evaluate(model, meta, SampleConfig(num=13, seed=1))
    assert stats.poems == 13 and stats.form_valid == 1.0
    assert 0 <= stats.rhymed <= 1 and 0 <= stats.copy_rate <= 1 and stats.ms_per_poem > 0
    again = evaluate(model, meta, SampleConfig(num=13, seed=1))
    assert again.as_dict() | {"ms_per_poem": 0} == stats.as_dict() | {"ms_per_poem": 0}  # seeded


def test_one_start_character_and_five_character_lines(trained):
    model, meta = checkpoint.load(trained / "best.safetensors")
    stats = evaluate(model, meta, SampleConfig(num=4, chars=5, lines=2, seed=0), first="山")
    assert stats.poems == 4 and stats.form_valid == 1.0
    assert len(STARTS) == 10


def test_a_file_of_poems_is_scored_with_the_same_checks(trained, tmp_path):
    from poemctl.evaluate import read_poem_file, score_poems

    path = tmp_path / "poems.txt"
    path.write_text(
        "月落乌啼霜满天，\n江枫渔火对愁眠。\n姑苏城外寒山寺，\n夜半钟声到客船。\n\n"
        "山山山山山山木，\n山山山山山山石。\n山山山山山山雪，\n山山山山山山月。\n",
        encoding="utf-8",
    )
    poems = read_poem_file(path)
    assert poems[0] == ["月落乌啼霜满天", "江枫渔火对愁眠", "姑苏城外寒山寺", "夜半钟声到客船"]
    _, meta = checkpoint.load(trained / "best.safetensors")
    stats = score_poems(meta, poems, 4, 7)
    assert stats.poems == 2 and stats.form_valid == 1.0 and stats.rhymed == 0.5
    one_a_line = tmp_path / "one-a-line.txt"
    one_a_line.write_text("月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。\n床前明月光。\n")
    assert [len(p) for p in read_poem_file(one_a_line)] == [4, 1]


def test_real_poems_come_from_the_test_split(trained):
    from poemctl.data import split_poems
    from poemctl.evaluate import real_poems

    _, meta = checkpoint.load(trained / "best.safetensors")
    from dataclasses import replace

    poems = real_poems(meta, 4, 5, num=1000)
    assert poems and all(len(p) == 4 and all(len(x) == 5 for x in p) for p in poems)
    train, test = split_poems(replace(meta.config.data, keep_commas=True))
    assert all(any("".join(p) in t.replace("，", "").replace("。", "") for t in test) for p in poems)


def test_evaluate_text_and_real_on_the_command_line(trained, tmp_path):
    from typer.testing import CliRunner

    from poemctl.cli import app

    path = tmp_path / "p.txt"
    path.write_text("月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。\n", encoding="utf-8")
    ckpt = str(trained / "best.safetensors")
    result = CliRunner().invoke(app, ["evaluate", "--ckpt", ckpt, "--text", str(path)])
    assert result.exit_code == 0, result.output
    assert "rhymed" in result.output and "100.0%" in result.output
    real = CliRunner().invoke(app, ["evaluate", "--ckpt", ckpt, "--real", "--chars", "5", "--num", "20"])
    assert real.exit_code == 0 and "real poems of the test split" in real.output, real.output
    both = CliRunner().invoke(app, ["evaluate", "--ckpt", ckpt, "--real", "--text", str(path)])
    assert both.exit_code == 2 and "not both" in both.output
