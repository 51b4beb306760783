"""What the recipes of running pretraining text (data/prose, data/brown) share: whole sentences
grouped into corpus lines, lines too short or holding a held-out definition left out and counted,
and the documents written in the format `train.py --data` reads (one passage per line, documents
separated by blank lines)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
import time
import zlib
from pathlib import Path

from minilm.data.leakage import Leakage, heldout_definitions
from minilm.files import atomic_write_gzip

MIN_WORDS = 3  # shorter lines (headings, "Yes.") are left out
COUNTS = ("documents", "leaked_lines", "short", "lines", "words")


def parse_args(p: argparse.ArgumentParser, out: Path, heldout: Path, argv=None) -> argparse.Namespace:
    """The flags every such recipe takes, added to its parser, then parsed: --words, --heldout
    (default `heldout`, the supersense folder) and --out (default `out`, the recipe's folder)."""
    p.add_argument("--words", type=int, default=80, help="most words per corpus line, whole sentences kept (default: %(default)s)")
    p.add_argument("--heldout", type=Path, default=heldout,
                   help="folder of the supersense dev.tsv.gz and test.tsv.gz whose definitions are kept out (default: %(default)s)")
    p.add_argument("--out", type=Path, default=out, help="where corpus.txt.gz and meta.json go (default: %(default)s)")
    args = p.parse_args(argv)
    if args.words < MIN_WORDS:
        p.error(f"--words must be at least {MIN_WORDS}")
    return args


def tarball_texts(data: bytes, source: str, wanted, what: str):
    """(file name, text) of each member of an npm tarball (gzipped tar, `data`) whose path
    `wanted(path)` accepts, in path order, read as UTF-8 (bad bytes replaced). A tarball that does
    not open, or holds no such member, is a ValueError naming `source` and `what` was looked for."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and wanted(m.name)), key=lambda m: m.name)
            if not members:
                raise ValueError(f"{source}: no {what} in this tarball")
            for m in members:
                yield Path(m.name).name, tar.extractfile(m).read().decode("utf-8", errors="replace")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{source}: not a readable npm tarball (a gzipped tar): {e}") from None


def group_sentences(sentences, max_words: int):
    """Consecutive sentences joined into lines of at most `max_words` words; a longer sentence
    stays whole, on a line of its own."""
    line, n = [], 0
    for sentence in sentences:
        words = len(sentence.split())
        if line and n + words > max_words:
            yield " ".join(line)
            line, n = [], 0
        line.append(sentence)
        n += words
    if line:
        yield " ".join(line)


def kept_lines(lines, leak: Leakage | None, stats: dict) -> list[str]:
    """The lines of one document that go into the corpus; those shorter than MIN_WORDS words or
    holding a held-out definition (minilm/data/leakage.py) are counted in `stats` and left out.
    A document with lines left counts in documents, lines and words."""
    for key in COUNTS:
        stats.setdefault(key, 0)
    kept = []
    for line in lines:
        if len(line.split()) < MIN_WORDS:
            stats["short"] += 1
        elif leak is not None and leak.find(line) is not None:
            stats["leaked_lines"] += 1
        else:
            kept.append(line)
    if kept:
        stats["documents"] += 1
        stats["lines"] += len(kept)
        stats["words"] += sum(len(line.split()) for line in kept)
    return kept


def write_documents(path: Path, documents) -> None:
    """Documents (lists of lines) separated by blank lines, gzipped with mtime 0, written atomically."""
    atomic_write_gzip(path, (("\n" if i else "") + "\n".join(lines) + "\n" for i, lines in enumerate(documents)))


def build_corpus(out: Path, heldout: Path, documents, meta: dict, started: float) -> dict:
    """Write out/corpus.txt.gz from `documents(leak, stats)` (an iterable of documents, counting into
    stats) with the definitions of the `heldout` folder kept out, then out/meta.json (`meta`, the
    held-out folder and the counts), and print the counts; bad input ends in one error line."""
    leak = Leakage(heldout_definitions(heldout))
    stats = dict.fromkeys(COUNTS, 0)
    try:
        write_documents(out / "corpus.txt.gz", documents(leak, stats))
    except (ValueError, OSError, EOFError, tarfile.TarError) as e:
        sys.exit(f"error: {e}")
    meta = {**meta, "heldout": str(heldout), "heldout_texts": len(leak), **stats}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'corpus.txt.gz'}: {stats['documents']:,} documents, {stats['lines']:,} lines, "
          f"{stats['words']:,} words ({stats['leaked_lines']:,} lines holding a held-out definition and "
          f"{stats['short']:,} shorter than {MIN_WORDS} words left out) in {time.perf_counter() - started:.0f}s")
    return meta
