"""Build minilm's default dataset from the WordNet 3.0 database.

    python data/wordnet/prepare.py                    # build into data/wordnet/
    python data/wordnet/prepare.py --check            # do the committed files rebuild identically?
    python data/wordnet/prepare.py --wordnet-dir /usr/share/wordnet --out /tmp/wn --seed 1

WordNet groups English words into synsets (sets of synonyms), each with a gloss: a definition
followed by example sentences, e.g. `a young person of either sex; "she writes books for children"`.
Every synset also belongs to one of 45 lexicographer files (`noun.animal`, `verb.motion`, ...).
From the four database files data.noun, data.verb, data.adj and data.adv this script writes:

    supersense/{train,dev,test}.tsv.gz  noun definition -> its lexicographer file (25 classes, the
                                        "supersense"), split 80/10/10 by a seeded shuffle
    corpus.txt.gz                       pretraining text: one synset per line (definition, then its
                                        examples), one document per lexicographer file, minus every
                                        dev/test definition
    synonyms.tsv.gz                     word -> the words that share a synset with it, for EDA data
                                        augmentation (finetune.py --augment eda)
    meta.json                           counts, seed, source and the sha256 of every file above

Everything is gzipped with mtime 0 and no file name, so a rerun gives byte-identical files, and each
file is written atomically (temp file, then os.replace). Standard library only.

Where the database is looked for, in order: --wordnet-dir, $WORDNET_DIR, /usr/share/wordnet
(Debian's wordnet-base), NLTK's corpora/wordnet under the usual nltk_data roots, an earlier download
in the cache folder; failing all of these, WNdb-3.0.tar.gz is downloaded from Princeton into the
cache.
"""

import argparse
import gzip
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WNDB_URL = "https://wordnetcode.princeton.edu/3.0/WNdb-3.0.tar.gz"
POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}  # corpus order
NLTK_ROOTS = ["~/nltk_data", "/usr/share/nltk_data", "/usr/local/share/nltk_data",
              "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# WordNet 3.0's lexnames table: lex_filenum (the second field of a data line) -> lexicographer file.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
SUPERSENSES = [name for name in LEXNAMES if name.startswith("noun.") and name != "noun.Tops"]


@dataclass(frozen=True)
class Synset:
    pos: str               # n, v, a or r: which data file it came from (satellites count as a)
    offset: int            # byte offset of its line in that file: WordNet's synset id
    lexname: str           # lexicographer file, e.g. noun.animal
    words: tuple           # the synonyms, e.g. ("dog", "domestic_dog", "Canis_familiaris")
    definition: str
    examples: tuple

    @property
    def id(self):
        return f"{self.pos}.{self.offset:08d}"   # e.g. n.00015388


# ----------------------------------------------------------------------------- finding the database

def is_wordnet_dir(path):
    return all((Path(path) / name).is_file() for name in POS_FILES.values())


def find_wordnet_dir(flag, cache_dir):
    """The first folder holding data.{noun,verb,adj,adv}; WordNet is downloaded if none does."""
    for name, value in (("--wordnet-dir", flag), ("$WORDNET_DIR", os.environ.get("WORDNET_DIR"))):
        if value:   # an explicit choice that is wrong is an error, not a reason to look elsewhere
            if not is_wordnet_dir(value):
                sys.exit(f"error: {name}={value} has no WordNet data.noun, data.verb, data.adj "
                         "and data.adv")
            return Path(value).absolute()
    nltk_roots = os.environ.get("NLTK_DATA", "").split(os.pathsep) + NLTK_ROOTS
    candidates = [Path("/usr/share/wordnet")]
    candidates += [Path(root).expanduser() / "corpora" / "wordnet" for root in nltk_roots if root]
    candidates += [cache_dir / "dict"]
    for path in candidates:
        if is_wordnet_dir(path):
            return path.absolute()
    return download_wordnet(cache_dir)


def download_wordnet(cache_dir):
    """Fetch WNdb-3.0.tar.gz into cache_dir and extract the files of its dict/ folder there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / "WNdb-3.0.tar.gz"
    if not tarball.exists():
        print(f"WordNet not found locally; downloading {WNDB_URL}")
        try:
            with urllib.request.urlopen(WNDB_URL, timeout=60) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as e:
            sys.exit(f"error: WordNet 3.0 was not found and could not be downloaded ({e}).\n"
                     "Install it with `apt-get install wordnet-base` (Debian/Ubuntu), or point "
                     "WORDNET_DIR (or --wordnet-dir) at a folder holding data.noun etc.")
        write_atomic(tarball, data)
    dict_dir = cache_dir / "dict"
    dict_dir.mkdir(exist_ok=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 2 and parts[-2] == "dict":
                # keep only the base name: a hostile archive cannot write outside dict_dir
                write_atomic(dict_dir / parts[-1], tar.extractfile(member).read())
    if not is_wordnet_dir(dict_dir):
        sys.exit(f"error: {tarball} has no dict/data.noun etc.; delete it and rerun")
    return dict_dir.absolute()


# ----------------------------------------------------------------------------- parsing

def read_version(path):
    """WordNet's version, from a data file's license header ('WordNet 3.0 Copyright 2006 ...')."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("  "):
                break
            match = re.search(r"WordNet (\d+(?:\.\d+)*) Copyright", line)
            if match:
                return match.group(1)
    return "unknown"


def split_gloss(gloss):
    """Split a gloss into (definition, examples).

    The definition runs up to the first `; "`; the rest is the examples, double-quoted and
    separated by `; `. A quoted example followed by an attribution ("...- Henry Miller") keeps only
    the quoted text; the few malformed ones (unbalanced quotes, notes after the quote) keep their
    text with the quotes removed.
    """
    start = re.search(r';\s*"', gloss)
    cut = len(gloss) if start is None else start.start()
    head, tail = gloss[:cut], gloss[cut + 1:]
    definition = clean(head.strip().rstrip(";"))
    examples = []
    for part in re.split(r';\s*(?=")', tail.strip().rstrip(";")):
        quoted = re.fullmatch(r'\s*"([^"]*)"\s*(?:-.*)?', part)
        example = clean(quoted.group(1) if quoted else part.replace('"', ''))
        example = example.rstrip(";:, ")
        if example:
            examples.append(example)
    return definition, tuple(examples)


def clean(text):
    """Collapse every run of whitespace (tabs, newlines included) to one space."""
    return " ".join(text.split())


def parse_data_file(path, pos):
    """Yield the Synsets of one data.<pos> file, checking each line's structure as it goes.

    A data line reads (the gloss after ' | ' is free text):
        synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...]
        [f_cnt frame...] | gloss
    where w_cnt is two hex digits, each pointer is 4 fields and frames (verbs only) are 3 fields.
    Lines starting with two spaces are the license header. A line's offset equals its byte position,
    which catches files that were converted (line endings) or are not WordNet data files at all.
    """
    position = 0
    with open(path, "rb") as f:
        for raw in f:
            line_start, position = position, position + len(raw)
            if raw.startswith(b"  "):
                continue
            line = raw.decode("utf-8")
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            if not bar or int(fields[0]) != line_start:
                raise ValueError(f"{path}: malformed data line at byte {line_start}: {line[:60]!r}")
            lex_filenum, w_cnt = int(fields[1]), int(fields[3], 16)
            words = tuple(fields[4:4 + 2 * w_cnt:2])
            i = 4 + 2 * w_cnt
            i += 1 + 4 * int(fields[i])          # p_cnt pointers of 4 fields each
            if pos == "v":
                i += 1 + 3 * int(fields[i])      # f_cnt verb frames of 3 fields each
            if i != len(fields):
                raise ValueError(f"{path}: field counts do not add up at byte {line_start}")
            definition, examples = split_gloss(gloss)
            yield Synset(pos, line_start, LEXNAMES[lex_filenum], words, definition, examples)


def load_wordnet(wordnet_dir):
    """All synsets of the four data files, in corpus order: noun, verb, adj, adv, each by offset."""
    return [s for pos, name in POS_FILES.items() for s in parse_data_file(wordnet_dir / name, pos)]


# ----------------------------------------------------------------------------- building the dataset

def split_supersense(synsets, seed):
    """Assign each non-Tops noun synset with a definition to train/dev/test.

    Synsets sharing an exact definition form one group, so the same text never lands in two
    splits. The groups, ordered by their first offset, are shuffled with random.Random(seed);
    walking them in that order, a group goes to train while fewer than 80% of the synsets have been
    placed, then to dev until 90%, then to test.
    """
    groups = defaultdict(list)   # definition -> synsets; dicts keep insertion (= offset) order
    for s in synsets:
        if s.pos == "n" and s.lexname != "noun.Tops" and s.definition:
            groups[s.definition].append(s)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    total = sum(len(g) for g in order)
    bounds = (SPLIT_FRACTIONS[0] * total, (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * total)
    splits, placed = {name: [] for name in SPLITS}, 0
    for group in order:
        name = "train" if placed < bounds[0] else "dev" if placed < bounds[1] else "test"
        splits[name].extend(group)
        placed += len(group)
    return {name: sorted(rows, key=lambda s: s.offset) for name, rows in splits.items()}


def supersense_tsv(rows):
    lines = ["text\tlabel\tsynset"] + [f"{s.definition}\t{s.lexname}\t{s.id}" for s in rows]
    return "".join(line + "\n" for line in lines)


def sentence(text):
    return text if text[-1] in ".!?" else text + "."


def leakage_index(texts):
    """minilm/data/leakage.py's index of held-out texts, loaded from its file (it needs only the
    standard library; importing the minilm package would bring in torch)."""
    spec = importlib.util.spec_from_file_location("minilm_leakage", HERE.parent.parent / "minilm" / "data" / "leakage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Leakage(texts)


def lemma_text(word):
    """A word of a synset as text: underscores read as spaces, an adjective marker such as '(a)' or
    '(p)' dropped ('Canis_familiaris' -> 'Canis familiaris')."""
    return re.sub(r"\((?:a|p|ip)\)$", "", word).replace("_", " ")


def lemmas(s):
    """A synset's words as text: 'dog, domestic dog, Canis familiaris'."""
    return ", ".join(lemma_text(w) for w in s.words)


def synonyms_tsv(synsets):
    """The synonym table of EDA (minilm/data/augment.py): `word<TAB>syn|syn|...`, one line per
    lower-cased word that shares a synset with another word, its synonyms as WordNet writes them,
    sorted. Every part of speech counts: 'run' lists 'campaign' (verb) and 'tally' (noun)."""
    table = defaultdict(set)
    for s in synsets:
        words = [lemma_text(w) for w in s.words]
        for w in words:
            table[w.lower()].update(v for v in words if v.lower() != w.lower())
    lines = ["word\tsynonyms"] + [f"{w}\t{'|'.join(sorted(v))}" for w, v in sorted(table.items()) if v]
    return "".join(line + "\n" for line in lines)


def corpus_documents(synsets, held_out, headwords=False):
    """One document per lexicographer file, each a list of lines (one synset each).

    A line is the definition then every example, each ending in sentence punctuation:
    'a young person of either sex. she writes books for children.' With `headwords`, the synset's
    words come first: 'child, kid, youngster, ...: a young person of either sex. ...', and a line
    whose words are a held-out text ('light machine gun' is a test definition) is left out too. Synsets in `held_out` (their
    id or their definition) are left out, and so is every line that holds a held-out definition
    by the rule of minilm/data/leakage.py (after normalising case, punctuation and spaces: as the
    whole line or a clause of it, or anywhere when it has six words or more).
    """
    ids = {s.id for s in held_out}
    texts = {s.definition for s in held_out}
    leak = leakage_index(texts)
    documents = defaultdict(list)   # (pos order, lex_filenum) -> lines
    pos_rank = {pos: rank for rank, pos in enumerate(POS_FILES)}
    for s in synsets:
        if s.id in ids or s.definition in texts:
            continue
        parts = [sentence(text) for text in (s.definition, *s.examples) if text]
        line = " ".join(parts)
        if headwords and parts:
            line = f"{lemmas(s)}: {line}"  # checked with and without its words: a held-out text may be a term
        if parts and leak.find(" ".join(parts)) is None and leak.find(line) is None:
            documents[(pos_rank[s.pos], LEXNAMES.index(s.lexname))].append(line)
    return [documents[key] for key in sorted(documents)]


def gzip_bytes(text):
    """gzip with mtime 0 and no file name in the header, so equal text gives equal bytes.

    GzipFile writes the header itself (OS byte 255 on every platform); gzip.compress may let zlib
    write it instead, with the OS byte of the machine.
    """
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
        f.write(text.encode("utf-8"))
    return buffer.getvalue()


def write_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)   # mkstemp makes it private (0600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def build(wordnet_dir, out_dir, seed, headwords=False):
    """Write every output file into out_dir and return the meta dict (also written as meta.json)."""
    version = read_version(wordnet_dir / POS_FILES["n"])
    if version != "3.0":
        print(f"warning: expected WordNet 3.0, found {version}; the lexnames table is 3.0's",
              file=sys.stderr)
    synsets = load_wordnet(wordnet_dir)
    splits = split_supersense(synsets, seed)
    documents = corpus_documents(synsets, splits["dev"] + splits["test"], headwords)

    files = {f"supersense/{name}.tsv.gz": gzip_bytes(supersense_tsv(rows))
             for name, rows in splits.items()}
    files["corpus.txt.gz"] = gzip_bytes("\n\n".join("\n".join(doc) for doc in documents) + "\n")
    synonyms = synonyms_tsv(synsets)
    files["synonyms.tsv.gz"] = gzip_bytes(synonyms)
    for rel, data in files.items():
        write_atomic(out_dir / rel, data)

    class_counts = {name: Counter(s.lexname for s in rows) for name, rows in splits.items()}
    majority = max(SUPERSENSES, key=lambda c: (class_counts["train"][c], c))
    nouns = [s for s in synsets if s.pos == "n" and s.lexname != "noun.Tops"]
    n_lines = sum(len(doc) for doc in documents)
    meta = {
        "source": {"dir": wordnet_dir.name, "wordnet_version": version},
        "seed": seed,
        "synsets_parsed": dict(Counter(POS_FILES[s.pos] for s in synsets)),
        "supersense": {
            "classes": SUPERSENSES,
            "synsets": {name: len(rows) for name, rows in splits.items()},
            "dropped_empty_definition": sum(1 for s in nouns if not s.definition),
            "class_counts": {name: {c: class_counts[name][c] for c in SUPERSENSES}
                             for name in SPLITS},
            "majority_class": majority,   # most frequent in train: the baseline's constant guess
            "majority_share_test": round(class_counts["test"][majority] / len(splits["test"]), 4),
        },
        "corpus": {"documents": len(documents), "lines": n_lines,
                   "synsets_left_out": len(synsets) - n_lines},
        "synonyms": {"words": synonyms.count("\n") - 1},
        "sha256": {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()},
    }
    if headwords:
        meta["headwords"] = True  # absent from the shipped meta.json, which --check rebuilds byte for byte
    write_atomic(out_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return meta


def check(wordnet_dir, out_dir, seed):
    """Rebuild into a temp folder; exit 1 unless every file in out_dir is byte-identical."""
    names = [f"supersense/{name}.tsv.gz" for name in SPLITS] + ["corpus.txt.gz", "synonyms.tsv.gz", "meta.json"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        build(wordnet_dir, Path(tmp), seed)
        for name in names:
            committed, fresh = out_dir / name, Path(tmp) / name
            if not committed.is_file():
                problems.append(f"{name}: missing")
            elif committed.read_bytes() != fresh.read_bytes():
                same_text = (name.endswith(".gz") and gzip.decompress(committed.read_bytes())
                             == gzip.decompress(fresh.read_bytes()))
                problems.append(f"{name}: " + ("same content, different gzip bytes (another zlib?)"
                                               if same_text else "content differs"))
    if problems:
        sys.exit(f"check FAILED for {out_dir} against a fresh build (seed {seed}, WordNet at "
                 f"{wordnet_dir}):\n  " + "\n  ".join(problems) +
                 f"\nRebuild with: python {sys.argv[0]} --out {out_dir} --seed {seed}")
    print(f"check ok: all {len(names)} files in {out_dir} are byte-identical to a fresh build")


def print_summary(meta, out_dir, seconds):
    ss, corpus = meta["supersense"], meta["corpus"]
    print(f"WordNet {meta['source']['wordnet_version']} from {meta['source']['dir']}/, "
          f"seed {meta['seed']}: {meta['synsets_parsed']}")
    print(f"supersense ({len(ss['classes'])} classes): " +
          ", ".join(f"{name} {n}" for name, n in ss["synsets"].items()) +
          f"; {ss['dropped_empty_definition']} dropped (empty definition)")
    print(f"majority class {ss['majority_class']}: {ss['majority_share_test']:.1%} of test")
    print(f"corpus: {corpus['lines']} lines in {corpus['documents']} documents, "
          f"{corpus['synsets_left_out']} synsets left out (dev/test text)")
    print(f"synonyms: {meta['synonyms']['words']} words")
    for rel in meta["sha256"]:
        print(f"  {out_dir / rel}  {(out_dir / rel).stat().st_size:,} bytes")
    print(f"done in {seconds:.1f}s")


def main():
    parser = argparse.ArgumentParser(
        description="Build the WordNet supersense splits and pretraining corpus for minilm.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--wordnet-dir", type=Path, default=None,
                        help="folder holding WordNet's data.noun/data.verb/data.adj/data.adv; "
                             "if unset: $WORDNET_DIR, /usr/share/wordnet, NLTK's corpora/wordnet, "
                             "the cache, then a download")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="output folder for supersense/, corpus.txt.gz, synonyms.tsv.gz and meta.json")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/dev/test shuffle")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
                        / "minilm" / "wordnet",
                        help="where WNdb-3.0.tar.gz is downloaded and extracted if WordNet is "
                             "not found elsewhere")
    parser.add_argument("--headwords", action="store_true",
                        help="start every corpus line with its synset's words ('dog, domestic dog, Canis "
                             "familiaris: a member of ...'); needs an --out other than the shipped folder")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; rebuild into a temp folder and exit 1 unless the "
                             "files in --out are byte-identical to it")
    args = parser.parse_args()

    if args.headwords and (args.check or args.out.resolve() == HERE):
        parser.error("--headwords writes another corpus than the shipped one: give it its own --out "
                     "(e.g. data/wordnet/headwords), without --check")
    wordnet_dir = find_wordnet_dir(args.wordnet_dir, args.cache_dir)
    if args.check:
        check(wordnet_dir, args.out, args.seed)
        return
    t0 = time.perf_counter()
    meta = build(wordnet_dir, args.out, args.seed, args.headwords)
    print_summary(meta, args.out, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
