"""Reading raw text corpora: a text file (optionally .gz), a folder of them, or JSONL with a text field.

Plain text follows BERT's pretraining format: one sentence or passage per line, documents
separated by blank lines. A file without blank lines is one document (a stream of lines; next-sentence
prediction cuts it into pseudo-documents of consecutive lines, minilm/data/pretrain.py).
A corpus is read as documents, each a list of non-empty, cleaned lines; `iter_documents` streams
them (memory does not grow with the corpus), `read_documents` returns them all.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import unicodedata
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".raw", ".tokens")


def is_gzip(path) -> bool:
    return Path(path).suffix.lower() == ".gz"


def open_text(path, errors: str = "strict"):
    """Open a text file for reading as UTF-8 (a leading byte-order mark, as Excel writes, is
    dropped), transparently gunzipping *.gz. errors="surrogateescape" reads bytes that are not
    UTF-8 as lone surrogates (U+DC80-U+DCFF) instead of failing: `undecodable` finds them."""
    path = Path(path)
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors=errors)
    return open(path, encoding="utf-8-sig", errors=errors)


_ESCAPED = re.compile("[\udc80-\udcff]")


def undecodable(text: str) -> bool:
    """Whether text read with errors="surrogateescape" held bytes that are not UTF-8."""
    return _ESCAPED.search(text) is not None


def not_utf8(path) -> ValueError:
    """The error for a file that is not UTF-8, naming its first bad line."""
    path = Path(path)
    with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return ValueError(f"{path}:{lineno}: not UTF-8 text (column {e.start + 1}: {e.reason}); save the file as UTF-8")
    return ValueError(f"{path}: not UTF-8 text; save the file as UTF-8")


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff\ufffd]")


def clean_line(line: str) -> str:
    """Unicode NFC normalisation, control and zero-width characters (and U+FFFD, the mark of
    undecodable bytes) removed, whitespace collapsed to single spaces."""
    return " ".join(CONTROL.sub("", unicodedata.normalize("NFC", line)).split())


def _documents_from_lines(lines, path):
    doc = []
    for lineno, raw in enumerate(lines, start=1):
        line = clean_line(raw)
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _documents_from_jsonl(lines, path, field: str):
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise ValueError(f"{path}:{lineno}: expected an object with a string field {field!r}")
        doc = [clean_line(x) for x in record[field].split("\n")]
        doc = [x for x in doc if x]
        if doc:
            yield doc


def corpus_files(path) -> list[Path]:
    """The text files of a corpus: the file itself, or a folder's files in sorted order; for a
    list of paths (several corpora trained on together), the files of each in turn."""
    if isinstance(path, (list, tuple)):
        return [f for p in path for f in corpus_files(p)]
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"{path}: no text files ({', '.join(TEXT_SUFFIXES)}) in this folder")
        return files
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{path}: no such corpus file or folder")


def iter_documents(path, text_field: str = "text"):
    """Stream the documents of a corpus file or folder, one list of cleaned lines at a time."""
    for file in corpus_files(path):
        try:
            with open_text(file) as f:
                if file.name.endswith((".jsonl", ".jsonl.gz")):
                    yield from _documents_from_jsonl(f, file, text_field)
                else:
                    yield from _documents_from_lines(f, file)
        except UnicodeDecodeError:
            raise not_utf8(file) from None


def read_documents(path, text_field: str = "text") -> list[list[str]]:
    """All documents of a corpus file or folder, in memory."""
    docs = list(iter_documents(path, text_field))
    if not docs:
        raise ValueError(f"{path}: the corpus is empty")
    return docs
