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
