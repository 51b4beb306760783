"""Held-out text that must never be pretrained on: a pretraining corpus may not contain a dev or
test example of a downstream task, or the fine-tuned model is scored on text it has read.

Texts are compared after `normalise` (lower case, every run of non-letters-or-digits one space):
"A dog; a domestic animal." and "a dog a domestic animal" are the same text. A corpus line leaks
a held-out text t when

    t equals the whole line, or
    t has >= CLAUSE_WORDS words and equals a clause of the line (the line cut at . ; : ! ?), or
    t has >= MIN_WORDS words and occurs in the line as a run of consecutive words.

Short texts ("the act of propelling", "shrimps") are common phrases of ordinary English, found
inside longer definitions and lists, so only their appearance as a whole line or clause counts. `Leakage.find` answers in time linear in the line:
the held-out texts are indexed by their first MIN_WORDS words.
"""

from __future__ import annotations

import re

MIN_WORDS = 6
CLAUSE_WORDS = 3
NON_WORD = re.compile(r"[\W_]+")
CLAUSE = re.compile(r"[.;:!?]")


def normalise(text: str) -> str:
    """Lower case, punctuation and spacing removed: runs of non-alphanumerics become one space."""
    return NON_WORD.sub(" ", text.lower()).strip()


class Leakage:
    """An index of held-out texts; `find(line)` returns the first one the line contains, or None."""

    def __init__(self, texts):
        self.long: dict[tuple, set] = {}  # first MIN_WORDS words -> the whole word tuples starting so
        self.short: set[str] = set()
        for text in texts:
            words = tuple(normalise(text).split())
            if len(words) >= MIN_WORDS:
                self.long.setdefault(words[:MIN_WORDS], set()).add(words)
            elif words:
                self.short.add(" ".join(words))

    def __len__(self) -> int:
        return len(self.short) + sum(len(v) for v in self.long.values())

    def find(self, line: str) -> str | None:
        words = normalise(line).split()
        for i in range(len(words) - MIN_WORDS + 1):
            for text in self.long.get(tuple(words[i : i + MIN_WORDS]), ()):
                if tuple(words[i : i + len(text)]) == text:
                    return " ".join(text)
        whole = " ".join(words)
        if whole in self.short:
            return whole
        for piece in CLAUSE.split(line):
            key = normalise(piece)
            if key in self.short and key.count(" ") + 1 >= CLAUSE_WORDS:
                return key
        return None


def heldout_definitions(supersense_dir) -> list[str]:
    """The dev and test definitions of the WordNet supersense task (data/wordnet/supersense)."""
    from minilm.data.tasks import read_examples

    texts = []
    for split in ("dev", "test"):
        texts += [e.text for e in read_examples(f"{supersense_dir}/{split}.tsv.gz", "text", None, "label")]
    return texts
