"""bench/cloze.py's two measures of how guesses are made: a first guess that copies a word of the
probe, and one taken from unrelated text put before it, counted as the rows say."""

import json
from pathlib import Path

import pytest

from conftest import load_file
from minilm.checkpoint import save_pretrained
from minilm.config import ModelConfig
from minilm.inference import predict
from minilm.model.families import build_model
from test_scripts import corpus, encoder_ckpt  # noqa: F401  (module fixtures)

ROOT = Path(__file__).resolve().parent.parent


def cloze():
    return load_file(ROOT / "bench" / "cloze.py", "cloze")


def test_copies_reads_the_texts_own_tokens(encoder_ckpt):
    cz = cloze()
    _, tk = predict.load(encoder_ckpt)
    assert cz.copies(tk, "a animal like the dog [MASK]", "dog")
    assert not cz.copies(tk, "a animal like the [MASK]", "dog")
    assert not cz.copies(tk, "a animal like the [MASK]", tk.special_token("mask"))  # the mask itself is no word of the text


@pytest.fixture(scope="module")
def long_mlm(tmp_path_factory, encoder_ckpt):
    """An untrained MLM encoder with the tiny encoder's tokenizer and 256 positions, room for every
    probe and its context: the bench's bookkeeping is checked, not its answers."""
    model, tk = predict.load(encoder_ckpt)
    out = tmp_path_factory.mktemp("long")
    save_pretrained(out, build_model(ModelConfig(**{**model.config.__dict__, "max_seq_len": 256})).eval(), tokenizer=tk)
    return out


def test_the_counts_are_those_of_the_rows(long_mlm, tmp_path):
    cz = cloze()
    result = cz.main(["--ckpt", str(long_mlm), "--heldout", "0", "--context", "2", "--out", str(tmp_path / "c.json")])
    rows = result["probes"] + result["sentences"]["probes"]
    assert result["first_guess_copies"] == sum(r["copies"] for r in rows)
    assert 0 <= result["with_context"]["first_guess_from_context"] <= len(rows)
    assert json.loads((tmp_path / "c.json").read_text())["with_context"]["definitions_before"] == 2
    _, tk = predict.load(long_mlm)
    for row in rows:  # each row's flag is the definition's: its first guess is one of the probe's tokens
        assert row["copies"] == cz.copies(tk, row["text"], row["top5"][0])
    md = (tmp_path / "c.md").read_text()
    assert f"in {result['first_guess_copies']} of {len(rows)} probes" in md and "With 2 unrelated" in md
