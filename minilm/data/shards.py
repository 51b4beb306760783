"""Token shards: a tokenized corpus on disk, read back through numpy memmaps.

A corpus is tokenized once, streaming (memory does not grow with its size), into a directory:

    meta.json              dtype, vocabulary size, counts per split, the source and its cleaning
    tokenizer.json         the tokenizer that made the ids
    <split>.tokens.bin     the token stream: each line's tokens (then a newline token, when the
                           tokenizer has one, between lines), each document ended by [EOS] (when it has one)
    <split>.lines.bin      int64 (n_lines, 2): where each line starts and ends in the stream
    <split>.docs.bin       int64 (n_docs + 1): the index of each document's first line
    <split>.counts.bin     int64 (V,): how often each token occurs (vocabulary statistics, and the
                           unigram baseline without reading the stream)

Tokens are uint16 when the vocabulary fits in 65,536 ids, else uint32. `TokenShards` opens a split
with the interface the batch builders use: `tokens` (the stream), `line(i)`, `n_lines`,
`n_docs`, `doc_start`.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minilm.checkpoint import atomic_write_json
from minilm.tokenizer import Tokenizer

FORMAT = 1


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


class _SplitWriter:
    """Appends documents of one split to its files as they come."""

    def __init__(self, directory: Path, split: str, tokenizer: Tokenizer):
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.files = {k: open(directory / f"{split}.{k}.bin.tmp", "wb") for k in ("tokens", "lines", "docs")}
        self.counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        self.n_tokens = self.n_lines = self.n_docs = 0
        self.files["docs"].write(np.int64(0).tobytes())
        newline = tokenizer.encode("\n", add_special=False)
        self.newline = newline if len(newline) == 1 and newline[0] not in tokenizer.special_ids else []
        self.eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []  # ends each document, where there is one

    def add(self, doc_ids: list[list[int]]) -> None:
        stream, spans = [], []
        for i, ids in enumerate(doc_ids):
            start = self.n_tokens + len(stream)
            stream.extend(ids)
            spans.append((start, start + len(ids)))
            stream.extend(self.newline if i + 1 < len(doc_ids) else self.eos)
        arr = np.asarray(stream, dtype=self.dtype)
        self.files["tokens"].write(arr.tobytes())
        self.files["lines"].write(np.asarray(spans, dtype=np.int64).tobytes())
        self.n_tokens += len(arr)
        self.n_lines += len(doc_ids)
        self.n_docs += 1
        self.files["docs"].write(np.int64(self.n_lines).tobytes())
        self.counts += np.bincount(arr, minlength=len(self.counts))

    def close(self, directory: Path, split: str) -> dict:
        for f in self.files.values():
            f.close()
        with open(directory / f"{split}.counts.bin.tmp", "wb") as f:
            f.write(self.counts.tobytes())
        for k in ("tokens", "lines", "docs", "counts"):
            (directory / f"{split}.{k}.bin.tmp").replace(directory / f"{split}.{k}.bin")
        return {"tokens": self.n_tokens, "lines": self.n_lines, "documents": self.n_docs}


def write_shards(directory, docs, tokenizer: Tokenizer, source: dict | None = None, chunk_lines: int = 8192) -> dict:
    """Tokenize `docs`, an iterable of (split name, document as a list of lines), into
    `directory`, `chunk_lines` lines per call of the tokenizer. Returns the meta dict (also in
    meta.json, which is written last: a directory with a meta.json is complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").unlink(missing_ok=True)
    tokenizer.save(directory / "tokenizer.json")
    writers: dict[str, _SplitWriter] = {}
    pending: list[tuple[str, list[str]]] = []

    def flush():
        flat = [line for _, doc in pending for line in doc]
        ids = tokenizer.encode_batch(flat, add_special=False)[0] if flat else []
        at = 0
        for split, doc in pending:
            if split not in writers:
                writers[split] = _SplitWriter(directory, split, tokenizer)
            writers[split].add(ids[at : at + len(doc)])
            at += len(doc)
        pending.clear()

    buffered = 0
    for split, doc in tqdm(docs, desc="tokenizing", unit="doc", leave=False):
        pending.append((split, doc))
        buffered += len(doc)
        if buffered >= chunk_lines:
            flush()
            buffered = 0
    flush()
    meta = {"format": FORMAT, "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name, "vocab_size": tokenizer.vocab_size,
            "splits": {split: w.close(directory, split) for split, w in writers.items()}, "source": source or {}}
    atomic_write_json(directory / "meta.json", meta)
    return meta


def is_shard_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "meta.json").is_file()


class TokenShards:
    """One split of a shard directory, memory-mapped: nothing is read until it is indexed."""

    def __init__(self, directory, split: str = "train"):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory}: no meta.json (not a token shard directory, or its writing did not finish)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: shard format {self.meta.get('format')!r}, this minilm reads format {FORMAT}")
        if split not in self.meta["splits"]:
            raise ValueError(f"{meta_path}: no split {split!r} (it has {', '.join(self.meta['splits'])})")
        self.split = split
        self.tokenizer = Tokenizer.load(self.directory / "tokenizer.json")
        n = self.meta["splits"][split]
        self.tokens = self._map("tokens", np.dtype(self.meta["dtype"]), (n["tokens"],))  # the stream
        self.lines = self._map("lines", np.int64, (n["lines"], 2))  # (n_lines, 2) start, end
        self.doc_start = self._map("docs", np.int64, (n["documents"] + 1,))  # first line of each document

    def _map(self, kind, dtype, shape):
        path = self.directory / f"{self.split}.{kind}.bin"
        if shape[0] == 0:
            return np.zeros(shape, dtype=dtype)
        mapped = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        if hasattr(mmap, "MADV_RANDOM"):  # batches read scattered windows: no readahead around them
            mapped._mmap.madvise(mmap.MADV_RANDOM)
        return mapped

    @property
    def n_lines(self) -> int:
        return len(self.lines)

    @property
    def n_docs(self) -> int:
        return len(self.doc_start) - 1

    def line(self, i: int) -> np.ndarray:
        start, end = self.lines[i]
        return self.tokens[start:end]

    def stream(self) -> np.ndarray:
        return self.tokens

    def counts(self) -> np.ndarray:
        return np.fromfile(self.directory / f"{self.split}.counts.bin", dtype=np.int64)
