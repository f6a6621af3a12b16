"""The linear glob matcher (worker/globs.py): fnmatch's semantics, at one step per character of the key
whatever the pattern. Steps are counted, not timed: a bound on wall time would pass on a fast machine
whatever the algorithm."""

from __future__ import annotations

import fnmatch
import random
import warnings

import pytest

from ferry.worker.globs import GlobSet

CASES = [
    # pattern, key, matches
    ("*.csv", "a/b/c.csv", True),
    ("*.csv", "a.csv.bak", False),
    ("tmp/*", "tmp/x/y", True),
    ("tmp/*", "keep/tmp/x", False),
    ("?.csv", "a.csv", True),
    ("?.csv", "ab.csv", False),
    ("[ab].csv", "b.csv", True),
    ("[!ab].csv", "b.csv", False),
    ("[!ab].csv", "c.csv", True),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[z-a]", "m", False),  # a reversed range matches nothing
    ("[]]", "]", True),  # "]" first in a class is a character
    ("[!]]", "a", True),
    ("[", "[", True),  # never closed: a literal
    ("a[", "a[", True),
    ("[*]", "*", True),  # "*" inside a class is a character
    ("[*]", "x", False),
    ("[?]", "?", True),
    ("a-b", "a-b", True),
    ("[a-]", "-", True),
    ("*", "", True),
    ("", "", True),
    ("", "x", False),
    ("**", "anything/at/all", True),
    ("*a*b*c*", "xxaxxbxxcxx", True),
    ("*a*b*c*", "xxaxxcxxbxx", False),
    ("*\n*", "line\nbreak", True),  # "*" crosses newlines and "/"
    ("ünï*", "ünïcødé", True),
    ("A*", "a", False),  # case matters
]


@pytest.mark.parametrize(("pattern", "key", "matches"), CASES)
def test_matches_like_fnmatch(pattern: str, key: str, matches: bool) -> None:
    assert fnmatch.fnmatchcase(key, pattern) is matches  # the table itself is fnmatch's
    assert GlobSet.compile([pattern]).matches(key) is matches


def test_agrees_with_fnmatch_on_random_patterns() -> None:
    """Random patterns over the characters that mean something to globs, against random keys; sets of
    several patterns match when any of them does."""
    rng = random.Random(20260611)
    pattern_chars, key_chars = "ab-*?[]!\\^/", "ab-]![\\^/*?"
    warnings.simplefilter("ignore")  # fnmatch warns about "possible set difference" in some classes
    for _ in range(3000):
        patterns = ["".join(rng.choice(pattern_chars) for _ in range(rng.randint(1, 9))) for _ in range(3)]
        single, together = GlobSet.compile(patterns[:1]), GlobSet.compile(patterns)
        for _ in range(6):
            key = "".join(rng.choice(key_chars) for _ in range(rng.randint(0, 8)))
            assert single.matches(key) is fnmatch.fnmatchcase(key, patterns[0]), (patterns[0], key)
            expected = any(fnmatch.fnmatchcase(key, p) for p in patterns)
            assert together.matches(key) is expected, (patterns, key)


def backtracking_steps(pattern: str, key: str) -> int:
    """Steps of the textbook recursive matcher that regex engines resemble: at each star, try every
    split of the rest of the key. The contrast the linear matcher is measured against."""
    steps = 0

    def match(p: int, k: int) -> bool:
        nonlocal steps
        steps += 1
        if p == len(pattern):
            return k == len(key)
        if pattern[p] == "*":
            return any(match(p + 1, i) for i in range(k, len(key) + 1))
        return k < len(key) and pattern[p] in (key[k], "?") and match(p + 1, k + 1)

    match(0, 0)
    return steps


PATHOLOGICAL = [
    # pattern, key: many stars before a character the key never has
    ("*a" * 5 + "*b", "a" * 30),
    ("*a" * 12 + "*b", "a" * 1024),
    ("*?" * 40 + "*b", "x" * 1024),
    ("[a-z]*" * 30 + "!", "q" * 1024),
]


@pytest.mark.parametrize(("pattern", "key"), PATHOLOGICAL)
def test_a_pathological_pattern_costs_one_step_per_character(pattern: str, key: str) -> None:
    matched, steps = GlobSet.compile([pattern]).match_steps(key)
    assert matched is fnmatch.fnmatchcase(key, pattern) is False
    assert steps <= len(key)


def test_backtracking_would_explode_where_the_automaton_does_not() -> None:
    pattern, key = "*a" * 5 + "*b", "a" * 30
    assert backtracking_steps(pattern, key) > 100_000  # grows like len(key) ** stars
    assert GlobSet.compile([pattern]).match_steps(key)[1] == 30


def test_a_thousand_patterns_cost_one_step_per_character_too() -> None:
    """The model's bound (1,000 patterns per list): still one step per character, every pattern at once."""
    patterns = [f"*{i:04d}*x*y*z" for i in range(1000)]
    key = "0123456789" * 100
    matched, steps = GlobSet.compile(patterns).match_steps(key)
    assert not matched and steps <= len(key)


def test_empty_set_matches_nothing() -> None:
    assert not GlobSet.compile([]) and not GlobSet.compile([]).matches("x")
