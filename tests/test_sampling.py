import torch

from poemctl.config import ModelConfig
from poemctl.data import PAD, UNK, Vocab
from poemctl.models.torch_lstm import TorchLSTM
from poemctl.sampling import course_pick, format_poem, write_poems

VOCAB = Vocab((PAD, UNK, "。", *"春夏秋冬月山水江花风云雨"))


def test_course_pick_draws_from_the_top_five():
    probs = torch.linspace(1, 0.1, 15).softmax(0)
    special = torch.zeros(15, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    picks = {course_pick(probs, special, gen) for _ in range(300)}
    assert picks == {0, 1, 2, 3, 4}


def test_course_pick_redraws_specials_from_the_top_ten():
    probs = torch.linspace(1, 0.1, 15).softmax(0)
    special = torch.zeros(15, dtype=torch.bool)
    special[:5] = True  # the whole top 5 is punctuation
    gen = torch.Generator().manual_seed(0)
    picks = {course_pick(probs, special, gen) for _ in range(300)}
    assert picks == {5, 6, 7, 8, 9}


def test_course_pick_falls_back_when_top_ten_is_special():
    probs = torch.linspace(1, 0.1, 15).softmax(0)
    special = torch.zeros(15, dtype=torch.bool)
    special[:10] = True
    assert course_pick(probs, special, torch.Generator().manual_seed(0)) == 10


def test_untrained_model_keeps_the_form():
    torch.manual_seed(0)
    model = TorchLSTM(ModelConfig(vocab_size=len(VOCAB), hidden=8, embedding=4))
    poems = write_poems(model, VOCAB, "月", lines=4, chars=5, num=20, seed=1)
    for poem in poems:
        assert len(poem) == 4 and all(len(line) == 5 for line in poem)
        assert poem[0][0] == "月"
        assert not set("".join(poem)) & {PAD, UNK, "。"}


def test_format_poem():
    assert format_poem(["一二三四五", "上山下水风", "甲乙丙丁戊", "子丑寅卯辰"]) == (
        "一二三四五，\n上山下水风。\n甲乙丙丁戊，\n子丑寅卯辰。"
    )
