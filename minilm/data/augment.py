"""EDA, easy data augmentation for text classification (Wei & Zou 2019): new training sentences
from old ones by four small edits, each sentence keeping its label.

For a sentence of l words and a strength alpha, n = max(1, round(alpha * l)):

    SR  synonym replacement   n words (not stop words) replaced by a random WordNet synonym
    RI  random insertion      n times, a synonym of a random word inserted at a random position
    RS  random swap           n times, two random words swap places
    RD  random deletion       each word deleted with probability alpha (one is always kept)

Each augmented copy applies one of the four, in turn (copy i uses operation i mod 4, as the
paper makes n_aug / 4 copies with each). The synonyms come from WordNet 3.0: two words are
synonyms when a synset holds both (`data/wordnet/synonyms.tsv.gz`, built by
data/wordnet/prepare.py). Words are matched lower-cased, with the punctuation around them kept
aside; a replaced word takes the synonym as WordNet writes it (lower case but for names).

Departures from the paper: its code also strips every non-letter and lower-cases the sentence
first; minilm keeps the text as it was but for the edited words.
"""

from __future__ import annotations

import random
from pathlib import Path

from minilm.data.corpus import open_text
from minilm.data.prepare import STOP_WORDS
from minilm.data.tasks import Example

OPERATIONS = ("sr", "ri", "rs", "rd")
PUNCTUATION = ".,;:!?\"'()[]"


def load_synonyms(path) -> dict[str, list[str]]:
    """word -> its synonyms, from a TSV of `word<TAB>syn|syn|...` lines (a header line first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no synonym table; build it with `python data/wordnet/prepare.py` (WordNet 3.0)")
    table = {}
    with open_text(path) as f:
        header = f.readline().rstrip("\n")
        if header != "word\tsynonyms":
            raise ValueError(f"{path}:1: expected the header 'word<TAB>synonyms', found {header[:60]!r}")
        for lineno, line in enumerate(f, start=2):
            word, tab, synonyms = line.rstrip("\n").partition("\t")
            if not tab or not word or not synonyms:
                raise ValueError(f"{path}:{lineno}: expected a word, a tab and its synonyms separated by '|'")
            table[word] = synonyms.split("|")
    return table


def key(word: str) -> str:
    """How a word of the text is looked up: lower case, without the punctuation around it."""
    return word.strip(PUNCTUATION).lower()


def candidates(words: list[str], synonyms: dict) -> list[int]:
    """Positions of the words that have a synonym and are not stop words."""
    return [i for i, w in enumerate(words) if key(w) not in STOP_WORDS and key(w) in synonyms]


def with_synonym(word: str, synonym: str) -> str:
    """`word` replaced by `synonym`, the punctuation around it kept: 'film,' -> 'movie,'."""
    core = word.strip(PUNCTUATION)
    start = word.find(core)
    return word[:start] + synonym + word[start + len(core):]


def synonym_replacement(words, n, synonyms, rng):
    out = list(words)
    positions = candidates(out, synonyms)
    rng.shuffle(positions)
    for i in positions[:n]:
        out[i] = with_synonym(out[i], rng.choice(synonyms[key(out[i])]))
    return out


def random_insertion(words, n, synonyms, rng):
    out = list(words)
    for _ in range(n):
        positions = candidates(out, synonyms)
        if not positions:
            break
        synonym = rng.choice(synonyms[key(out[rng.choice(positions)])])
        out.insert(rng.randrange(len(out) + 1), synonym)
    return out


def random_swap(words, n, rng):
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words, p, rng):
    kept = [w for w in words if rng.random() >= p]
    return kept or [rng.choice(words)]


def eda(text: str, op: str, alpha: float, synonyms: dict, rng: random.Random) -> str:
    """One augmented copy of `text` by operation `op` (sr, ri, rs or rd) at strength alpha."""
    words = text.split()
    if not words:
        return text
    n = max(1, round(alpha * len(words)))
    if op == "sr":
        words = synonym_replacement(words, n, synonyms, rng)
    elif op == "ri":
        words = random_insertion(words, n, synonyms, rng)
    elif op == "rs":
        words = random_swap(words, n, rng)
    elif op == "rd":
        words = random_deletion(words, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {op!r}: expected one of {', '.join(OPERATIONS)}")
    return " ".join(words)


def augment(examples: list[Example], copies: int, alpha: float, synonyms: dict, seed: int = 0) -> list[Example]:
    """The examples followed by `copies` augmented copies of each (same label; `where` names the
    original's line, with the operation). Deterministic in seed."""
    if copies < 1:
        raise ValueError(f"--augment-copies must be >= 1, got {copies}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"--augment-alpha must lie in (0, 1), got {alpha}")
    rng = random.Random(seed)
    extra = []
    for e in examples:
        for i in range(copies):
            op = OPERATIONS[i % len(OPERATIONS)]
            extra.append(Example(eda(e.text, op, alpha, synonyms, rng), e.pair, e.label, f"{e.where} (EDA {op})"))
    return list(examples) + extra
