"""The shipped default data: its structure, its promise (no dev/test text in the pretraining
corpus), and that data/wordnet/prepare.py rebuilds it byte for byte where WordNet 3.0 is installed."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT
from minilm.data.corpus import read_documents
from minilm.data.tasks import label_set, read_examples

WORDNET = ROOT / "data" / "wordnet"
SPLITS = {name: read_examples(WORDNET / "supersense" / f"{name}.tsv.gz") for name in ("train", "dev", "test")}


def test_supersense_splits():
    meta = json.loads((WORDNET / "meta.json").read_text())
    sizes = {name: len(rows) for name, rows in SPLITS.items()}
    assert sizes == meta["supersense"]["synsets"] == {"train": 65652, "dev": 8206, "test": 8206}
    labels = label_set(SPLITS["train"])
    assert len(labels) == 25 and all(l.startswith("noun.") for l in labels) and "noun.Tops" not in labels
    for name in ("dev", "test"):
        assert {e.label for e in SPLITS[name]} <= set(labels)
    texts = {name: {e.text for e in rows} for name, rows in SPLITS.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    majority, count = Counter(e.label for e in SPLITS["test"]).most_common(1)[0]
    assert majority == "noun.artifact" and 0.13 < count / len(SPLITS["test"]) < 0.15


def test_pretraining_corpus_leaves_out_dev_and_test_definitions():
    docs = read_documents(WORDNET / "corpus.txt.gz")
    assert len(docs) == 45  # one document per lexicographer file
    lines = [line for doc in docs for line in doc]
    assert len(lines) == 101184
    held_out = {e.text for name in ("dev", "test") for e in SPLITS[name]}
    # a corpus line starts with its synset's definition followed by ". "
    starts = {line.split(". ")[0].rstrip(".") for line in lines}
    assert not held_out & starts
    train_defs = [e.text for e in SPLITS["train"][:500]]
    assert sum(d in starts for d in train_defs) > 450  # the training definitions are there


def test_license_travels_with_the_data():
    text = (WORDNET / "LICENSE").read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in text


def wordnet_dir():
    for candidate in (os.environ.get("WORDNET_DIR"), "/usr/share/wordnet"):
        if candidate and (Path(candidate) / "data.noun").is_file():
            return candidate
    return None


@pytest.mark.skipif(wordnet_dir() is None, reason="WordNet 3.0 is not installed (apt-get install wordnet-base)")
def test_prepare_rebuilds_the_shipped_files_byte_for_byte():
    done = subprocess.run([sys.executable, str(WORDNET / "prepare.py"), "--check", "--wordnet-dir", wordnet_dir()],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(wordnet_dir() is None, reason="WordNet 3.0 is not installed (apt-get install wordnet-base)")
def test_prepare_with_headwords(tmp_path):
    """--headwords writes the same lines, each after its synset's words, and never over the shipped corpus."""
    done = subprocess.run([sys.executable, str(WORDNET / "prepare.py"), "--headwords", "--wordnet-dir", wordnet_dir(), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped, headed = read_documents(WORDNET / "corpus.txt.gz"), read_documents(tmp_path / "corpus.txt.gz")
    assert len(headed) == len(shipped)
    for hd, sd in zip(headed, shipped):  # the shipped lines in order, each after its words, but for the few whose words
        rest = iter(sd)                  # are a held-out text ('light machine gun: ...')
        assert all(any(h.endswith(": " + s) for s in rest) for h in hd)
    dropped = sum(map(len, shipped)) - sum(map(len, headed))
    assert 0 <= dropped < 10
    lines = [h for hd in headed for h in hd]
    assert lines[0].startswith("entity: ") and any(h.startswith("dog, domestic dog, Canis familiaris: ") for h in lines)
    assert not any(h.startswith("light machine gun: ") for h in lines)
    refused = subprocess.run([sys.executable, str(WORDNET / "prepare.py"), "--headwords", "--wordnet-dir", wordnet_dir()],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "its own --out" in refused.stderr


def test_prepare_names_a_missing_database(tmp_path):
    done = subprocess.run([sys.executable, str(WORDNET / "prepare.py"), "--wordnet-dir", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert str(tmp_path) in done.stdout + done.stderr
