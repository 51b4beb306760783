"""EDA data augmentation (minilm/data/augment.py, finetune.py --augment eda): each of the four
edits does what the paper says and nothing else, the synonym table is WordNet's and is read with
clear errors, and fine-tuning runs on the augmented set."""

import gzip
import random
from collections import Counter

import pytest

import finetune
from conftest import ROOT
from minilm.data import augment
from minilm.data.tasks import Example
from test_scripts import TINY, write_task

SYNONYMS = {"film": ["movie", "picture"], "good": ["fine", "beneficial"], "the": ["a"], "long": ["lengthy"]}
TEXT = "the film was good, and the film was long ."


def test_synonym_replacement_changes_n_content_words_to_synonyms():
    for seed in range(20):
        words = TEXT.split()
        out = augment.synonym_replacement(words, 2, SYNONYMS, random.Random(seed))
        assert len(out) == len(words)
        changed = [(a, b) for a, b in zip(words, out) if a != b]
        assert len(changed) == 2
        for before, after in changed:
            assert before.strip(",") in ("film", "good", "long")  # never the stop word 'the', though it has a synonym
            assert after.strip(",") in SYNONYMS[before.strip(",")] and after.endswith(",") == before.endswith(",")


def test_random_insertion_adds_synonyms_of_words_of_the_text():
    out = augment.random_insertion(TEXT.split(), 3, SYNONYMS, random.Random(0))
    added = Counter(out) - Counter(TEXT.split())
    assert sum(added.values()) == 3 and all(w in {"movie", "picture", "fine", "beneficial", "lengthy"} for w in added)


def test_random_swap_and_deletion():
    words = "a b c d e f g h".split()
    swapped = augment.random_swap(words, 2, random.Random(1))
    assert sorted(swapped) == words and swapped != words
    kept = [augment.random_deletion(words, 0.5, random.Random(s)) for s in range(200)]
    assert all(k == [w for w in words if w in k] for k in kept)  # order kept, only deletions
    assert 0.4 < sum(len(k) for k in kept) / (200 * len(words)) < 0.6
    assert augment.random_deletion(["only"], 0.99, random.Random(0)) == ["only"]  # one word is always kept


def test_augment_makes_copies_with_the_labels_and_one_operation_each():
    examples = [Example(TEXT, None, "pos", "t.tsv:2"), Example("a long film", None, "neg", "t.tsv:3")]
    out = augment.augment(examples, 4, 0.2, SYNONYMS, seed=0)
    assert out[:2] == examples and len(out) == 10
    assert [e.label for e in out[2:]] == ["pos"] * 4 + ["neg"] * 4
    assert [e.where for e in out[2:6]] == [f"t.tsv:2 (EDA {op})" for op in augment.OPERATIONS]
    assert out == augment.augment(examples, 4, 0.2, SYNONYMS, seed=0)  # deterministic in the seed
    with pytest.raises(ValueError, match="--augment-alpha must lie in"):
        augment.augment(examples, 4, 1.5, SYNONYMS)


def test_the_shipped_table_is_wordnets(tmp_path):
    table = augment.load_synonyms(ROOT / "data" / "wordnet" / "synonyms.tsv.gz")
    assert len(table) > 100_000
    assert {"film", "motion picture"} <= set(table["movie"]) and "movie" not in table["movie"]
    assert not any(w in table for w in ("", "movie_theater"))


def test_a_bad_table_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="python data/wordnet/prepare.py"):
        augment.load_synonyms(tmp_path / "missing.tsv.gz")
    bad = tmp_path / "bad.tsv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("word\tsynonyms\nfilm\tmovie\nbroken line\n")
    with pytest.raises(ValueError, match=f"{bad}:3: expected a word, a tab"):
        augment.load_synonyms(bad)


def test_finetune_with_eda(tmp_path, capsys):
    write_task(tmp_path / "train.tsv", 100, seed=0)
    write_task(tmp_path / "dev.tsv", 60, seed=1)
    table = tmp_path / "syn.tsv"
    table.write_text("word\tsynonyms\ndog\thound|canine\nriver\tstream\nbread\tloaf\n")
    result = finetune.main(["--init", "scratch", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
                            "--out", str(tmp_path / "eda"), "--augment", "eda", "--augment-copies", "2", "--synonyms", str(table),
                            "--epochs", "3", "--lr", "2e-3", "--batch-size", "16", *TINY])
    assert "EDA: 2 copies of each (alpha 0.1): 300 training examples" in capsys.readouterr().out
    assert result["dev"]["accuracy"] >= 0.7  # four topics: chance is 25%


def test_a_missing_table_stops_finetune(tmp_path):
    write_task(tmp_path / "train.tsv", 20, seed=0)
    with pytest.raises(SystemExit) as e:
        finetune.main(["--init", "scratch", "--train", str(tmp_path / "train.tsv"), "--out", str(tmp_path / "o"),
                       "--augment", "eda", "--synonyms", str(tmp_path / "none.tsv"), *TINY])
    assert f"error: --synonyms {tmp_path / 'none.tsv'}: no synonym table" in str(e.value.code)


@pytest.mark.parametrize("flags, message", [
    (["--augment-copies", "8"], "--augment-copies applies with --augment only"),
    (["--augment", "eda", "--task", "regression", "--train", "x.tsv"], "--augment eda edits single texts"),
    (["--augment", "eda", "--text-pair-col", "b"], "--augment eda edits single texts"),
    (["--augment", "eda", "--augment-alpha", "0"], "--augment-alpha must lie in (0, 1), got 0.0"),
    (["--augment", "eda", "--augment-copies", "0"], "--augment-copies must be >= 1, got 0"),
])
def test_eda_flag_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(flags)
    assert message in capsys.readouterr().err

