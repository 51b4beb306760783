"""From a raw corpus to token shards, streaming: read -> clean -> filter -> deduplicate -> split
-> tokenize -> memmap files (minilm/data/shards.py).

    cleaning      NFC, control characters out, whitespace collapsed (minilm/data/corpus.py)
    filters       lines shorter than `min_chars` or longer than `max_chars` characters are dropped
    duplicates    a document whose exact text was seen before is dropped (an 8-byte hash per
                  document is kept, not the text)
    split         each document is cut into blocks of `block` lines; a seeded draw per block sends a
                  `val_fraction` of them to validation, each held-out block its own document (so
                  next-sentence pairs exist within it); the rest of the document stays in train

The tokenizer, when none is given, is trained on the train split in a first streaming pass.
With `columns` (text column, pair column or None) the corpus is task files instead, read through
minilm/data/tasks.py: each row a document of its text (and pair text), labels never read. CoNLL
files (tagging data) give each sentence as a document, its words joined by spaces.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from minilm.data.corpus import corpus_files, iter_documents
from minilm.data.shards import is_shard_dir, write_shards
from minilm.data.tagging import conll_documents, is_conll
from minilm.data.tasks import task_documents
from minilm.tokenizer import Tokenizer


def read_corpus(path, text_field: str = "text", columns=None):
    """The documents of a corpus: of its text files, or with `columns` = (text column, pair column
    or None) of its task files (CSV, TSV, JSONL), one document per row. A CoNLL or CoNLL-U file
    (*.conll, *.conllu) gives one document per sentence, in either case."""
    for file in corpus_files(path):
        if is_conll(file):
            yield from conll_documents(file)
        elif columns is None:
            yield from iter_documents(file, text_field)
        else:
            yield from task_documents(file, *columns)


MAX_CHARS = 20_000  # a longer line is left out (a minified file, a table dumped on one line), and counted


def corpus_splits(path, val_fraction: float, seed: int = 0, block: int = 8, min_chars: int = 1, max_chars: int = MAX_CHARS,
                  text_field: str = "text", columns=None, stats: dict | None = None):
    """Yield (split, document) pairs of a corpus; counts of what was dropped go to `stats`."""
    stats = stats if stats is not None else {}
    for key in ("documents", "duplicates", "short_lines", "long_lines"):
        stats.setdefault(key, 0)
    seen = set()
    for d, doc in enumerate(read_corpus(path, text_field, columns)):
        stats["documents"] += 1
        kept = [line for line in doc if min_chars <= len(line) <= max_chars]
        stats["short_lines"] += sum(len(line) < min_chars for line in doc)
        stats["long_lines"] += sum(len(line) > max_chars for line in doc)
        if not kept:
            continue
        digest = hashlib.blake2b("\n".join(kept).encode("utf-8"), digest_size=8).digest()
        if digest in seen:
            stats["duplicates"] += 1
            continue
        seen.add(digest)
        blocks = [kept[i : i + block] for i in range(0, len(kept), block)]
        held = np.random.default_rng([seed, d]).random(len(blocks)) < val_fraction
        train = [line for b, h in zip(blocks, held) if not h for line in b]
        if train:
            yield "train", train
        for b, h in zip(blocks, held):
            if h:
                yield "val", b


def dropped_lines(stats: dict) -> str:
    """What the filters of corpus_splits left out, in words ("" when nothing)."""
    long, repeated = stats.get("long_lines", 0), stats.get("duplicates", 0)
    parts = [f"{long:,} line{'s' * (long != 1)} longer than {MAX_CHARS:,} characters" if long else "",
             f"{repeated:,} repeated document{'s' * (repeated != 1)}" if repeated else ""]
    return ", ".join(p for p in parts if p)


def fingerprint(path) -> list:
    """What identifies a corpus's content for reuse of its shards: each file's name, size and mtime."""
    return [[str(f), os.path.getsize(f), int(os.path.getmtime(f))] for f in corpus_files(path)]


def prepare_corpus(path, directory, tokenizer: Tokenizer | None = None, kind: str = "wordpiece", vocab_size: int = 8192,
                   val_fraction: float = 0.02, seed: int = 0, text_field: str = "text", columns=None, reuse: bool = False) -> dict:
    """Shards of the corpus at `path` in `directory` (train and val splits). Returns the meta dict.

    With `reuse`, shards already in `directory` are kept when they came from the same files
    (name, size, mtime), split and tokenizer kind, and from the same tokenizer (when one is given)
    or the same requested vocabulary size (when it is trained); meta["reused"] says so."""
    options = dict(val_fraction=val_fraction, seed=seed, text_field=text_field, columns=list(columns) if columns else None)
    paths = path if isinstance(path, (list, tuple)) else [path]
    source = {"path": ", ".join(str(Path(p).resolve()) for p in paths), "files": fingerprint(path), **options, "kind": kind, "vocab_size": vocab_size}
    if reuse and is_shard_dir(directory):
        meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
        ignored = {"dropped"} | ({"vocab_size"} if tokenizer is not None else set())  # a given tokenizer is compared itself
        same_source = all(meta["source"].get(k) == v for k, v in source.items() if k not in ignored)
        same_tokenizer = tokenizer is None or Tokenizer.load(directory).backend.to_str() == tokenizer.backend.to_str()
        if same_source and same_tokenizer:
            return {**meta, "reused": True}
    if tokenizer is None:
        lines = (line for split, doc in corpus_splits(path, **options) if split == "train" for line in doc)
        tokenizer = Tokenizer.train(lines, kind=kind, vocab_size=vocab_size)
    stats = source["dropped"] = {}  # filled while write_shards reads the documents, before it writes meta.json
    meta = write_shards(directory, corpus_splits(path, stats=stats, **options), tokenizer, source=source)
    for split in ("train", "val"):
        if meta["splits"].get(split, {}).get("tokens", 0) == 0:
            (Path(directory) / "meta.json").unlink()  # not a usable shard directory
            left_out = dropped_lines(stats)
            raise ValueError(f"{path}: the {split} split is empty (a corpus of {stats['documents']} documents"
                             + (f"; left out: {left_out}" if left_out else "")
                             + f"; {'raise --val-fraction' if split == 'val' else 'lower --val-fraction'})")
    return {**meta, "reused": False}
