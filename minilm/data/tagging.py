"""Token-classification data: CoNLL files and word-to-subword label alignment.

Two formats, told apart by the file name:

    *.conllu          Universal Dependencies: 10 tab-separated columns, `#` comment lines; the tag
                      is the UPOS column (`--tag-col upos`, the default) or XPOS (`--tag-col xpos`).
                      Multi-word token ranges (1-2) and empty nodes (8.1) are skipped.
    anything else     CoNLL: one token per line, its tag in the last whitespace-separated column
                      (CoNLL-2003, WNUT-17), a blank line between sentences; -DOCSTART- lines skipped.

A word split into several subwords is labelled on its first subword; the others get IGNORE_INDEX,
as in BERT's NER fine-tuning (Devlin et al. 2019, section 5.3). Words beyond --seq-len are dropped
from training and predicted as the first tag of the label set ("O" where there is one) at
evaluation, so every gold tag is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minilm.data.corpus import clean_line, not_utf8, open_text
from minilm.data.pretrain import pad
from minilm.data.tasks import TaskBatches
from minilm.objectives import IGNORE_INDEX

UD_COLUMNS = {"upos": 3, "xpos": 4, "lemma": 2}  # the columns read_conll can take as the "tag"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    where: str  # "file:line" of the sentence's first token


def read_conll(path, tag_col: str = "upos") -> list[Sentence]:
    """Sentences of a CoNLL or CoNLL-U file; errors name file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    conllu = path.name.lower().removesuffix(".gz").endswith(".conllu")
    if conllu and tag_col not in UD_COLUMNS:
        raise ValueError(f"{path}: --tag-col {tag_col!r} is not a CoNLL-U tag column (choose from {', '.join(UD_COLUMNS)})")
    sentences, words, tags, start = [], [], [], None

    def flush():
        nonlocal words, tags, start
        if words:
            sentences.append(Sentence(words, tags, f"{path}:{start}"))
        words, tags, start = [], [], None

    try:
        with open_text(path) as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if not line.strip():
                    flush()
                    continue
                if conllu:
                    if line.startswith("#"):
                        continue
                    fields = line.split("\t")
                    if len(fields) != 10:
                        raise ValueError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U fields, found {len(fields)}")
                    if not fields[0].isdigit():
                        continue  # a multi-word token range (1-2) or an empty node (8.1)
                    word, tag = fields[1], fields[UD_COLUMNS[tag_col]]
                else:
                    fields = line.split()
                    if fields[0] == "-DOCSTART-":
                        continue
                    if len(fields) < 2:
                        raise ValueError(f"{path}:{lineno}: expected a token and a tag, found {line.strip()!r}")
                    word, tag = fields[0], fields[-1]
                if tag == "" or (tag == "_" and not (conllu and tag_col == "lemma")):  # "_": no value (a lemma may be "_")
                    raise ValueError(f"{path}:{lineno}: field 'tag' is empty for token {word!r}")
                start = start or lineno
                words.append(word)
                tags.append(tag)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    flush()
    if not sentences:
        raise ValueError(f"{path}: no sentences (the file is empty)")
    return sentences


CONLL_SUFFIXES = (".conll", ".conllu", ".conll.gz", ".conllu.gz")


def is_conll(path) -> bool:
    """Whether a file is read as CoNLL (by its name: *.conll, *.conllu, optionally gzipped)."""
    return Path(path).name.lower().endswith(CONLL_SUFFIXES)


def conll_documents(path):
    """The sentences of a CoNLL or CoNLL-U file as a pretraining corpus (task-adaptive pretraining
    for tagging): each sentence one document of one line, its words joined by spaces, as
    fine-tuning reads them. The tags are never used."""
    for s in read_conll(path):
        line = clean_line(" ".join(s.words))
        if line:
            yield [line]


def tag_set(sentences) -> list[str]:
    """The sorted tags of the training sentences; "O" first when present (the outside tag)."""
    tags = sorted({t for s in sentences for t in s.tags})
    return (["O"] + [t for t in tags if t != "O"]) if "O" in tags else tags


def tag_ids(sentences, tags: list[str]) -> list[list[int]]:
    index = {name: i for i, name in enumerate(tags)}
    out = []
    for s in sentences:
        for k, t in enumerate(s.tags):
            if t not in index:
                raise ValueError(f"{s.where}: token {k + 1} ({s.words[k]!r}) has tag {t!r}, which does not occur in the training data")
        out.append([index[t] for t in s.tags])
    return out


class TaggingData(TaskBatches):
    """Sentences as subword ids with one label per word on its first subword (B, T);
    `word_index[i]` maps the subword positions of sentence i to its words (None: special token)."""

    def __init__(self, sentences, tokenizer, labels: list[list[int]], max_len: int, batch_size: int, seed: int = 0):
        self.sentences, self.labels = sentences, labels
        self.ids, self.word_index = tokenizer.encode_words([s.words for s in sentences], max_len=max_len)
        self.token_labels = [first_subword_labels(wi, y) for wi, y in zip(self.word_index, labels)]
        self.teacher = None  # per sentence: a teacher's logits on its first subwords (T, L), NaN elsewhere (minilm/training/distill.py)
        self.pad_id, self.batch_size, self.seed = tokenizer.fill_id, batch_size, seed
        self._epoch_cache = {}

    def _collate(self, index) -> dict:
        input_ids = pad([self.ids[i] for i in index], self.pad_id)  # (B, T)
        out = {
            "input_ids": input_ids,
            "attention_mask": pad([[1] * len(self.ids[i]) for i in index], 0, input_ids.shape[1]),  # by length: the fill id may be real
            "labels": pad([self.token_labels[i] for i in index], IGNORE_INDEX, input_ids.shape[1]),  # (B, T)
        }
        if self.teacher is not None:
            rows = [self.teacher[i] for i in index]
            teacher = torch.full((len(rows), input_ids.shape[1], rows[0].shape[-1]), float("nan"))  # (B, T, L)
            for b, r in enumerate(rows):
                teacher[b, : len(r)] = torch.as_tensor(r)
            out["teacher"] = teacher
        return out


def first_subword_labels(word_index: list, word_labels: list[int]) -> list[int]:
    """The label of each word on its first subword; IGNORE_INDEX on later subwords and special tokens."""
    out = []
    for k, w in enumerate(word_index):
        first = w is not None and (k == 0 or word_index[k - 1] != w)
        out.append(word_labels[w] if first else IGNORE_INDEX)
    return out


def word_predictions(token_logits, word_index: list, n_words: int, fallback: int = 0) -> list[int]:
    """Per-word predicted label ids from per-subword logits (T, L): each word takes its first
    subword's argmax; words cut off by truncation take `fallback`."""
    pred = [fallback] * n_words
    best = token_logits.argmax(-1).tolist()
    for k, w in enumerate(word_index):
        if w is not None and (k == 0 or word_index[k - 1] != w):
            pred[w] = best[k]
    return pred
