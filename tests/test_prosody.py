import pytest

from poemctl.poem_stats import line_set, poem_stats
from poemctl.prosody import PING, ZE, Prosody, patterns

JINGYESI = ["床前明月光", "疑是地上霜", "举头望明月", "低头思故乡"]  # 李白《静夜思》: rhymes, a 古绝 (not 格律)
DUFU = ["两个黄鹂鸣翠柳", "一行白鹭上青天", "窗含西岭千秋雪", "门泊东吴万里船"]  # 杜甫《绝句》
LIBAI = ["朝辞白帝彩云间", "千里江陵一日还", "两岸猿声啼不住", "轻舟已过万重山"]  # 李白《早发白帝城》
MADE_UP = ["春风吹绿柳", "夏日照青石", "秋水映明月", "冬雪落寒木"]


@pytest.fixture(scope="module")
def prosody():
    return Prosody()


def test_tones_of_simplified_characters(prosody):
    assert prosody.tones("光") == {PING}
    assert prosody.tones("月") == {ZE}
    assert prosody.tones("乡") == {PING, ZE}  # looked up as 鄉, which has both readings
    assert prosody.tones("☆") == frozenset()  # not listed: no known class


def test_rhymes_found_in_known_poems(prosody):
    assert prosody.rhymed(JINGYESI)  # 光 霜 乡: 下平七阳
    assert prosody.rhymed(DUFU) and prosody.rhymed(LIBAI)


def test_made_up_quatrain_is_rejected(prosody):
    assert not prosody.rhymed(MADE_UP)
    assert not prosody.tonal(MADE_UP)


def test_tone_patterns(prosody):
    assert prosody.tonal(DUFU) and prosody.tonal(LIBAI)
    assert not prosody.tonal(JINGYESI)


def test_patterns_shape():
    for chars in (5, 7):
        for lines in (2, 4, 8):
            for p in patterns(chars, lines).values():
                assert len(p) == lines and all(len(x) == chars for x in p)
                assert all(x[-1] == PING for x in p[1::2])  # even lines end level (they rhyme)


def test_stats(prosody):
    seen = line_set(["两个黄鹂鸣翠柳一行白鹭上青天"], 7)
    stats = poem_stats([DUFU, LIBAI], 4, 7, 0.5, seen, prosody)
    assert stats.form_valid == 1 and stats.rhymed == 1 and stats.tonal == 1
    assert stats.copy_rate == 2 / 8
    assert stats.ms_per_poem == 250
    bad = poem_stats([["床前明月光"] * 3], 4, 5, 0.1, set(), prosody)
    assert bad.form_valid == 0 and bad.distinct_2 == 4 / 12
