"""Shell globs (``*``, ``?``, ``[ab]``, ``[!a-z]``) matched in time linear in the key. Pure.

`fnmatch` translates a glob into a regular expression, and a backtracking regex engine may try many
ways of splitting a key between the stars of a pattern such as ``*a*a*a*b``. A tenant's filter is
matched against every listed key, so its cost must not depend on how cleverly the pattern is written.

Here every pattern of a set is one row of a bit-parallel automaton (Shift-And, with a self-loop on each
star): bit ``i`` of the state says "the key read so far matches the first ``i`` tokens". One character
of the key is one step: a fixed handful of integer operations on the state, whatever the patterns are.
A key of n characters costs exactly n steps (fewer when no pattern can match any more); the width of
the state is the number of tokens of all patterns together, which the CopyJob model bounds.

The semantics are `fnmatch.fnmatchcase`'s: the whole key must match, ``*`` also matches ``/`` and
newlines, ``[`` without a closing ``]`` is a literal, a reversed range such as ``[z-a]`` matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: Distinct characters whose transition masks are kept; keys are mostly ASCII, so this rarely fills.
_CACHE_LIMIT = 4096
#: Simple patterns tested one by one; beyond this many, one pass of the automaton is cheaper.
_SIMPLE_LIMIT = 16


@dataclass(frozen=True)
class CharClass:
    """``[...]``: single characters and inclusive ranges, possibly negated."""

    negated: bool
    singles: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    def accepts(self, char: str) -> bool:
        inside = char in self.singles or any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated


#: A token of a pattern: a literal character, "?" (any one character), a class, or "*".
Token = str | CharClass
STAR = "*"
ANY = "?"


def parse(pattern: str) -> list[Token]:
    """The tokens of one glob; consecutive stars are one star (they match the same keys)."""
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not tokens or tokens[-1] != STAR:
                tokens.append(STAR)
        elif char == "?":
            tokens.append(ANY)
        elif char == "[":
            parsed = _parse_class(pattern, i)
            if parsed is None:
                tokens.append(_literal("["))
            else:
                token, i = parsed
                tokens.append(token)
        else:
            tokens.append(_literal(char))
    return tokens


def _literal(char: str) -> Token:
    # "*" and "?" as literals can only come from a class; a one-character class keeps them apart.
    return CharClass(False, frozenset(char), ()) if char in (STAR, ANY) else char


def _parse_class(pattern: str, start: int) -> tuple[CharClass, int] | None:
    """The class opened just before ``start``, and the index after its ``]``; None when it never closes
    (then ``[`` is a literal). Mirrors `fnmatch.translate` (Python 3.11), range by range."""
    n = len(pattern)
    j = start
    if j < n and pattern[j] == "!":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1
    while j < n and pattern[j] != "]":
        j += 1
    if j >= n:
        return None
    i = start
    # Split on "-" as fnmatch does: between two chunks lies a range from the last character of the
    # first to the first character of the second; every other character is itself.
    chunks: list[str] = []
    k = i + 2 if pattern[i] == "!" else i + 1
    while True:
        k = pattern.find("-", k, j)
        if k < 0:
            break
        chunks.append(pattern[i:k])
        i = k + 1
        k = k + 3
    last = pattern[i:j]
    if last:
        chunks.append(last)
    else:
        chunks[-1] += "-"
    for k in range(len(chunks) - 1, 0, -1):
        if chunks[k - 1][-1] > chunks[k][0]:  # a reversed range matches nothing: drop both ends
            chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
            del chunks[k]
    # As in fnmatch, negation is read after empty ranges are dropped: "[]-*!]" keeps only "!", which
    # fnmatch reads as "any character".
    stuff = "-".join(chunks)
    if not stuff:
        return CharClass(False, frozenset(), ()), j + 1
    if stuff == "!":
        return CharClass(True, frozenset(), ()), j + 1
    negated = stuff[0] == "!"
    if negated:
        chunks[0] = chunks[0][1:]
    singles: set[str] = set()
    ranges: list[tuple[str, str]] = []
    for index, chunk in enumerate(chunks):
        first = 1 if index > 0 else 0  # its first character ends the range from the previous chunk
        last_index = len(chunk) - 1 if index < len(chunks) - 1 else len(chunk)
        singles.update(chunk[first:last_index])
        if index > 0:
            ranges.append((chunks[index - 1][-1], chunk[0]))
    return CharClass(negated, frozenset(singles), tuple(ranges)), j + 1


@dataclass
class GlobSet:
    """Any of several globs, as one automaton. Thread-safe for matching (the cache only ever grows
    with values that are the same whoever computes them)."""

    patterns: tuple[str, ...]
    #: Patterns of plain characters with stars at the ends only (``*.csv``, ``tmp/*``, ``*/cache/*``),
    #: the common case, as (starts with a star, the characters, ends with a star): matched with
    #: `str.startswith`/`endswith`/`in`, which also read each character of the key a bounded number of
    #: times, without the automaton's per-character Python loop.
    _simple: list[tuple[bool, str, bool]] = field(default_factory=list)
    _literals: dict[str, int] = field(default_factory=dict)
    _classes: list[tuple[int, CharClass]] = field(default_factory=list)
    _any: int = 0
    _star: int = 0
    _start: int = 0
    _accept: int = 0
    _cache: dict[str, int] = field(default_factory=dict)

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> GlobSet:
        globs = cls(tuple(patterns))
        base = 0
        for pattern in globs.patterns:
            tokens = parse(pattern)
            inner = tokens[
                1 if tokens[:1] == [STAR] else 0 : -1 if len(tokens) > 1 and tokens[-1] == STAR else None
            ]
            if len(globs._simple) < _SIMPLE_LIMIT and all(
                isinstance(t, str) and t not in (STAR, ANY) for t in inner
            ):
                text = "".join(str(t) for t in inner)
                globs._simple.append((tokens[:1] == [STAR], text, len(tokens) > 1 and tokens[-1] == STAR))
                continue
            globs._start |= 1 << base
            for offset, token in enumerate(tokens):
                bit = 1 << (base + offset)
                if token == STAR:
                    globs._star |= bit
                elif token == ANY:
                    globs._any |= bit
                elif isinstance(token, CharClass):
                    globs._classes.append((bit, token))
                else:
                    globs._literals[token] = globs._literals.get(token, 0) | bit
            globs._accept |= 1 << (base + len(tokens))
            base += len(tokens) + 1  # the accept bit separates rows: no token ever shifts across it
        return globs

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _closure(self, state: int) -> int:
        # A star may match nothing: where a star is reached, so is the token after it. Stars never
        # follow each other (`parse` merges them), so one pass reaches everything.
        return state | ((state & self._star) << 1)

    def _mask(self, char: str) -> int:
        """Tokens that accept ``char``."""
        mask = self._cache.get(char)
        if mask is None:
            mask = self._literals.get(char, 0) | self._any
            for bit, token in self._classes:
                if token.accepts(char):
                    mask |= bit
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[char] = mask
        return mask

    def match_steps(self, key: str) -> tuple[bool, int]:
        """Whether any glob matches the whole of ``key``, and the steps taken: one per character read by
        the automaton (the simple patterns' string tests count as one step per character of the key)."""
        for leading, text, trailing in self._simple:
            if _simple_match(key, leading, text, trailing):
                return True, len(key)
        if not self._start:
            return False, len(key) if self._simple else 0
        state = self._closure(self._start)
        star = self._star
        steps = 0
        for char in key:
            if not state:
                break
            steps += 1
            state = self._closure(((state & self._mask(char)) << 1) | (state & star))
        return bool(state & self._accept), steps

    def matches(self, key: str) -> bool:
        return self.match_steps(key)[0]


def _simple_match(key: str, leading: bool, text: str, trailing: bool) -> bool:
    if leading and trailing:
        return text in key
    if leading:
        return key.endswith(text)
    if trailing:
        return key.startswith(text)
    return key == text
