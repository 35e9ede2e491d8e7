"""Levenshtein distance and nearest match through rapidfuzz equal a plain dynamic programme (written here) on random
strings and symbol sequences, with both tie rules (COIN: first in list order; LTA: lexicographically smallest)."""

import random

import pytest

from livecue.eval import textmetrics as X


def reference_distance(a, b) -> int:
    """Textbook Wagner–Fischer: insert, delete, substitute each cost 1."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def reference_nearest(query, candidates, ties):
    d = [reference_distance(query, c) for c in candidates]
    best = [c for c, x in zip(candidates, d) if x == min(d)]
    return best[0] if ties == "first" else min(best)


def random_text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


@pytest.mark.parametrize("alphabet", ["ab", "abcd ", "cut the onion.", "éßø水😀a"])
def test_distance_equals_the_reference_on_random_strings(alphabet):
    rng = random.Random(alphabet)
    for _ in range(300):
        a, b = random_text(rng, alphabet, 12), random_text(rng, alphabet, 12)
        assert X.levenshtein(a, b) == reference_distance(a, b) == X.levenshtein(b, a), (a, b)


def test_distance_equals_the_reference_on_symbol_sequences():
    """LTA compares ints and (verb, noun) pairs; a string against a list of characters compares element-wise."""
    rng = random.Random(1)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randint(0, 10))]
        b = [rng.randrange(4) for _ in range(rng.randint(0, 10))]
        assert X.levenshtein(a, b) == reference_distance(a, b)
        pa, pb = [(x, x % 2) for x in a], [(x % 3, 1) for x in b]
        assert X.levenshtein(pa, pb) == reference_distance(pa, pb)
    assert X.levenshtein("abc", list("abd")) == 1 and X.levenshtein([], "ab") == 2


@pytest.mark.parametrize("ties", ["first", "smallest"])
def test_nearest_match_equals_the_reference(ties):
    rng = random.Random(ties)
    for _ in range(40):
        candidates = [random_text(rng, "abcd ", 8) for _ in range(rng.randint(1, 30))]
        matcher = X.NearestMatcher(candidates)
        for _ in range(10):
            query = random_text(rng, "abcde ", 10)
            assert matcher.distances(query).tolist() == [reference_distance(query, c) for c in candidates]
            assert matcher.nearest(query, ties=ties) == reference_nearest(query, candidates, ties)
    with pytest.raises(ValueError, match="no candidates"):
        X.NearestMatcher([])
