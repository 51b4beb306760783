"""bench/repeats.py's count on a corpus built to know the answer: each pair of neighbouring lines
shares one word, and no line repeats a word of its own."""

from pathlib import Path

from conftest import load_file

ROOT = Path(__file__).resolve().parent.parent


def name(n: int) -> str:
    """A word of letters only, distinct for each n (none of them a stop word)."""
    return "zq" + "".join(chr(97 + int(d)) for d in str(n))


def test_neighbouring_lines_share_what_random_ones_do_not():
    repeats = load_file(ROOT / "bench" / "repeats.py", "repeats")
    lines = [f"{name(j // 2)} {name(10_000 + j)} {name(20_000 + j)}" for j in range(2_000)]  # lines 2k and 2k+1 share name(k)
    rates = repeats.repeat_rates(lines, samples=3_000, row_words=6)  # a row: the line and the next one
    assert rates["line"] == 0
    assert 0.12 < rates["consecutive"] < 0.22  # the shared word drawn (1 in 3) from a line whose next shares it (1 in 2)
    assert rates["random-lines"] < 0.02
