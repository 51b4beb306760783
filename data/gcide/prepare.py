"""Pretraining text from GCIDE, the GNU Collaborative International Dictionary of English.

    apt-get install dict-gcide                     # Debian / Ubuntu: /usr/share/dictd/gcide.dict.dz
    python data/gcide/prepare.py                   # writes data/gcide/corpus.txt.gz and meta.json
    python data/gcide/prepare.py --dict PATH/gcide.dict.dz --out /tmp/gcide
    python train.py --data data/wordnet/corpus.txt.gz data/gcide/corpus.txt.gz

GCIDE is Webster's Revised Unabridged Dictionary (1913) with later additions, about 200,000
entries of English definitions, distributed under the GNU GPL (version 2 or later). It reads as
minilm's default data does: definitions of words, in sentences. This script reads the dictd
database that Debian's `dict-gcide` installs (`gcide.dict.dz`, gzip-compatible, and the
`gcide.index` beside it, whose entries give each headword's byte offset and length in base64).

What becomes a line of the corpus: one paragraph of an entry (a sense, a note, a sub-entry), with
the headword, pronunciation and part of speech, etymologies and every `[...]` bracket, `{` `}`
markup, `--Author.` citations and sense numbers removed; `Syn:` lists and paragraphs of fewer
than three words are dropped. One document per initial letter (A, B, ...), as the dictionary is
ordered.

Left out, so that no held-out text of the default data is pretrained on:
  - every paragraph whose source is WordNet (marked `[WordNet 1.5]`; about 9,600 entries hold one):
    those are WordNet glosses, and the supersense dev and test sets are WordNet glosses too;
  - every line that holds a dev or test definition of data/wordnet/supersense by the rule of
    minilm/data/leakage.py (compared after normalising case, punctuation and spaces).

Expected counts, dict-gcide 0.48.5 (Debian 12), default flags: see data/gcide/README.md.
"""

import argparse
import gzip
import json
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's minilm, whatever else is installed

from minilm.data.leakage import Leakage, heldout_definitions  # noqa: E402
from minilm.files import atomic_write_gzip  # noqa: E402

DEFAULT_DICT = Path("/usr/share/dictd/gcide.dict.dz")
B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
MIN_WORDS = 3

HEADWORD = re.compile(r"^[^\\\n]*\\[^\\]*\\,?\s*")             # 'Coagulate \Co*ag"u*late\, '
PRONUNCIATION = re.compile(r"^\([^()]*\),?\s*(?=(?:n|a|v|adv|adj|prep|conj|interj|pron|p|imp|pl)\.)")  # '(dg or dg), n.': what brackets leave of one
PART_OF_SPEECH = re.compile(r"^(?:(?:n|a|v|t|i|adv|adj|prep|conj|interj|pron|p|pr|imp|pl|sing|vb|superl|compar|pref|suff)\.[\s,;&]*)+")
BRACKETS = re.compile(r"\[[^\[\]]*\]")                          # innermost [...], removed repeatedly
CITATION = re.compile(r"\s*--\s*[A-Z][^.;]{0,60}\.")            # ' --Shak.', ' --Boyle.'
SENSE = re.compile(r"^(?:\d+\.|\([a-z]\))\s*")                   # '1. ', '(a) '
WORDNET = re.compile(r"WordNet\s*\d")  # "[WordNet 1.5]", and the few malformed "[WordNet 1.5", "WordNet 1.5]"
SOURCE_LINE = re.compile(r"(\n[ \t]*\[[^\[\]\n]*(?:Webster|WordNet|PJC)[^\[\]\n]*\][ \t]*\n)")  # a line that is only a source mark
LIGATURES = {"[ae]": "æ", "[AE]": "Æ", "[oe]": "œ", "[OE]": "Œ"}


def b64_number(text: str) -> int:
    """dictd's index numbers: base64 digits, most significant first."""
    n = 0
    for c in text:
        n = n * 64 + B64[c]
    return n


def regions(index_path):
    """(offset, length) of every entry region of the database, in file order, without dictd's own
    00-database-* entries."""
    seen = set()
    with open(index_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{index_path}:{lineno}: expected headword, offset and length separated by tabs")
            if fields[0].startswith("00-database"):
                continue
            seen.add((b64_number(fields[1]), b64_number(fields[2])))
    return sorted(seen)


def entries(dict_path, index_path):
    """Yield each entry's text (the headword line and its indented body)."""
    with gzip.open(dict_path, "rb") as f:
        data = f.read()
    for offset, length in regions(index_path):
        text = data[offset : offset + length].decode("utf-8", errors="replace")
        entry = []
        for line in text.split("\n"):
            if line and not line[0].isspace() and entry:  # a headword line starts the next entry
                yield "\n".join(entry)
                entry = []
            entry.append(line)
        if entry:
            yield "\n".join(entry)


def headword(entry: str) -> str:
    """The word an entry defines: its first line up to the pronunciation's backslash
    ('Dog \\Dog\\ (d[o^]g), n.' -> 'Dog'), or '' when the line has none."""
    head, slash, _ = entry.split("\n", 1)[0].partition("\\")
    return " ".join(head.split()) if slash else ""


def clean_paragraph(paragraph: str, first: bool, pronunciation: bool = False) -> str:
    """A paragraph of an entry as one plain line ('' if nothing is left). With `pronunciation`,
    a first paragraph also loses what the brackets leave of its pronunciation ('(dg or dg), ')."""
    text = " ".join(paragraph.split())
    for k, v in LIGATURES.items():
        text = text.replace(k, v)
    if first:
        text = HEADWORD.sub("", text, count=1)
    while True:
        stripped = BRACKETS.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = text.replace("{", "").replace("}", "")
    text = CITATION.sub("", text)
    text = " ".join(text.split())
    if first:
        if pronunciation:
            text = PRONUNCIATION.sub("", text)
        text = PART_OF_SPEECH.sub("", text)
    text = SENSE.sub("", text).strip(" ,;")
    if text.startswith("Syn:") or len(text.split()) < MIN_WORDS:
        return ""
    return text


def sourced_paragraphs(entry: str, stats: dict):
    """The paragraphs of an entry that do not come from WordNet. A source line such as
    `[1913 Webster]` or `[WordNet 1.5]` closes the text it vouches for: every paragraph since the
    previous source line (a WordNet sense is its definition paragraph, then its `Syn:` paragraph,
    then the mark)."""
    pending = []
    for part in SOURCE_LINE.split(entry + "\n"):
        if SOURCE_LINE.fullmatch(part):
            if WORDNET.search(part):
                stats["wordnet_paragraphs"] += len(pending)
            else:
                yield from pending
            pending = []
            continue
        for paragraph in re.split(r"\n\s*\n", part):
            if paragraph.strip():
                stats["paragraphs"] += 1
                pending.append(paragraph.strip("\n"))
                if WORDNET.search(paragraph):  # a mark not on a line of its own ("[WordNet 1.5 +PJC] extroverted", "[WordNet 1.5")
                    stats["wordnet_paragraphs"] += len(pending)
                    pending = []
    yield from pending  # text after the last source line


def corpus_documents(dict_path, index_path, leak: Leakage | None, stats: dict, headwords: bool = False):
    """Yield (letter, line) for every kept paragraph; counts go to `stats`. With `headwords`, each
    line starts with the word its entry defines ('Dog: A quadruped of the genus Canis ...'); the
    leakage check reads the line with and without it (a held-out text may be a term such as
    'fer de lance')."""
    for key in ("entries", "paragraphs", "wordnet_paragraphs", "leaked_lines", "short_or_syn", "lines", "words"):
        stats.setdefault(key, 0)
    for entry in entries(dict_path, index_path):
        if entry.startswith("00"):  # dictd's own 00-database-* / 00database* records, read as part of a region
            continue
        stats["entries"] += 1
        letter = entry[:1].upper() if entry[:1].isalpha() else "#"
        word = headword(entry) if headwords else ""
        for paragraph in sourced_paragraphs(entry, stats):
            line = clean_paragraph(paragraph, first=not paragraph[:1].isspace(), pronunciation=headwords)  # a headword line opens it
            if not line:
                stats["short_or_syn"] += 1
                continue
            if word:
                line = f"{word}: {line}"
            if leak is not None and (leak.find(line) is not None or leak.find(line[len(word) + 2 :] if word else line) is not None):
                stats["leaked_lines"] += 1
                continue
            stats["lines"] += 1
            stats["words"] += len(line.split())
            yield letter, line


def write_corpus(path: Path, pairs) -> None:
    """Lines grouped into documents (a blank line whenever the initial letter changes), gzipped
    with mtime 0, written atomically."""
    def pieces():
        previous = None
        for letter, line in pairs:
            yield ("\n" if previous is not None and letter != previous else "") + line + "\n"
            previous = letter

    atomic_write_gzip(path, pieces())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dict", type=Path, default=DEFAULT_DICT, help="the dictd database gcide.dict.dz (default: %(default)s, from Debian's dict-gcide)")
    p.add_argument("--index", type=Path, help="its index (default: gcide.index beside --dict)")
    p.add_argument("--heldout", type=Path, default=ROOT / "data" / "wordnet" / "supersense",
                   help="folder of the supersense dev.tsv.gz and test.tsv.gz whose definitions are kept out (default: %(default)s)")
    p.add_argument("--out", type=Path, default=HERE, help="where corpus.txt.gz and meta.json go (default: %(default)s)")
    p.add_argument("--headwords", action="store_true",
                   help="start every line with the word its entry defines ('Dog: A quadruped ...') and drop the pronunciation "
                        "left at the start of a first paragraph (write it to another --out, e.g. data/gcide/headwords)")
    args = p.parse_args(argv)
    index = args.index or args.dict.with_name(args.dict.name.split(".")[0] + ".index")
    for what, path in (("--dict", args.dict), ("--index", index)):
        if not path.is_file():
            sys.exit(f"error: {what} {path}: no such file. Install Debian's dict-gcide (apt-get install dict-gcide) or pass --dict")
    t0 = time.perf_counter()
    leak = Leakage(heldout_definitions(args.heldout))
    stats = {}
    try:
        write_corpus(args.out / "corpus.txt.gz", corpus_documents(args.dict, index, leak, stats, args.headwords))
    except (ValueError, OSError, EOFError) as e:
        sys.exit(f"error: {args.dict}: {e}")
    meta = {
        "source": {"dict": str(args.dict), "index": str(index), "name": "GCIDE, the GNU Collaborative International Dictionary of English",
                   "license": "GPL-2.0-or-later"},
        "heldout": str(args.heldout), "heldout_texts": len(leak), "headwords": args.headwords, **stats,
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{stats['entries']:,} entries, {stats['paragraphs']:,} paragraphs: {stats['wordnet_paragraphs']:,} from WordNet and "
          f"{stats['leaked_lines']:,} holding a held-out definition left out, {stats['short_or_syn']:,} too short or Syn: lists")
    print(f"wrote {args.out / 'corpus.txt.gz'}: {stats['lines']:,} lines, {stats['words']:,} words in {time.perf_counter() - t0:.0f}s")
    return meta


if __name__ == "__main__":
    main()
