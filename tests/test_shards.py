"""Token shards and the streaming corpus pipeline: round trips, cleaning, the split, and flat memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minilm.data.pipeline import MAX_CHARS, corpus_splits, dropped_lines, prepare_corpus
from minilm.data.pretrain import PretrainBatches, TokenizedCorpus
from minilm.data.shards import TokenShards, token_dtype, write_shards
from minilm.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
WORDS = "alpha beta gamma delta river stone cloud field north south apple bread".split()


def write_corpus(path: Path, docs: int, lines: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for d in range(docs):
            for _ in range(lines):
                f.write(" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) + f" d{d}\n")
            f.write("\n")
    return path


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.train([" ".join(WORDS)] * 20 + [f"d{i}" for i in range(10)], kind="bpe", vocab_size=300)


def test_shards_round_trip_the_in_memory_corpus(tmp_path, bpe):
    docs = [["alpha beta", "gamma delta river"], ["stone"], ["cloud field", "north", "south apple"]]
    write_shards(tmp_path, [("train", d) for d in docs], bpe)
    shards, memory = TokenShards(tmp_path, "train"), TokenizedCorpus(docs, bpe)
    assert shards.tokens.dtype == np.uint16 and isinstance(shards.tokens, np.memmap)
    assert shards.tokens.tolist() == memory.stream().tolist()  # lines, newlines, [EOS] after each document
    assert shards.n_lines == memory.n_lines == 6 and shards.n_docs == memory.n_docs == 3
    assert shards.doc_start.tolist() == memory.doc_start.tolist()
    for i in range(6):
        assert shards.line(i).tolist() == memory.line(i).tolist()
    assert shards.counts().tolist() == np.bincount(memory.stream(), minlength=bpe.vocab_size).tolist()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["splits"]["train"] == {"tokens": len(memory.stream()), "lines": 6, "documents": 3}
    for objective in ("clm", "mlm"):  # the batch builders take either
        a = PretrainBatches(shards, objective, 8, 4, seed=1).batch(3)
        b = PretrainBatches(memory, objective, 8, 4, seed=1).batch(3)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_token_dtype_follows_the_vocabulary_size():
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_an_unfinished_shard_directory_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        TokenShards(tmp_path)


def test_pipeline_cleans_filters_deduplicates_and_splits(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\u200b  b\x07\n" + "x" * 30 + "\n\nsame doc\n\nsame doc\n\n" + "\n".join(f"line {i}" for i in range(40)) + "\n")
    stats = {}
    out = list(corpus_splits(corpus, val_fraction=0.5, seed=0, max_chars=20, stats=stats))
    assert out[0] == ("train", ["a b"]) or out[0] == ("val", ["a b"])  # zero-width space and bell removed
    assert stats == {"documents": 4, "duplicates": 1, "short_lines": 0, "long_lines": 1}
    long_doc = [line for split, doc in out for line in doc if line.startswith("line")]
    assert sorted(long_doc, key=lambda x: int(x.split()[1])) == [f"line {i}" for i in range(40)]  # every line once
    assert {split for split, doc in out if doc[0].startswith("line")} == {"train", "val"}
    assert out == list(corpus_splits(corpus, val_fraction=0.5, seed=0, max_chars=20))  # seeded


def test_prepare_corpus_refuses_an_empty_validation_split(tmp_path, bpe):
    corpus = write_corpus(tmp_path / "c.txt", docs=2, lines=3)
    with pytest.raises(ValueError, match="the val split is empty"):
        prepare_corpus(corpus, tmp_path / "s", bpe, val_fraction=1e-9)
    assert not (tmp_path / "s" / "meta.json").exists()  # not left looking complete


def test_what_the_filters_leave_out_is_said(tmp_path, bpe, capsys):
    assert dropped_lines({"documents": 3, "duplicates": 1, "short_lines": 0, "long_lines": 2}) == (
        f"2 lines longer than {MAX_CHARS:,} characters, 1 repeated document")
    assert dropped_lines({"documents": 3, "duplicates": 0, "short_lines": 0, "long_lines": 0}) == ""
    corpus = tmp_path / "c.txt"
    corpus.write_text("y" * (MAX_CHARS + 1) + "\n")
    with pytest.raises(ValueError, match=f"the train split is empty \\(a corpus of 1 documents; left out: 1 line longer than {MAX_CHARS:,}"):
        prepare_corpus(corpus, tmp_path / "s", bpe, val_fraction=0.0)


def test_prepare_corpus_reuses_shards_of_the_same_corpus_and_settings(tmp_path, bpe):
    corpus = write_corpus(tmp_path / "c.txt", docs=20)
    first = prepare_corpus(corpus, tmp_path / "s", bpe, val_fraction=0.2, reuse=True)
    assert not first["reused"] and first["source"]["dropped"]["documents"] == 20
    assert prepare_corpus(corpus, tmp_path / "s", bpe, val_fraction=0.2, reuse=True)["reused"]
    assert not prepare_corpus(corpus, tmp_path / "s", bpe, val_fraction=0.3, reuse=True)["reused"]  # another split
    other = Tokenizer.train([" ".join(WORDS)] * 5, kind="bpe", vocab_size=280)
    assert not prepare_corpus(corpus, tmp_path / "s", other, val_fraction=0.3, reuse=True)["reused"]  # another tokenizer
    assert not prepare_corpus(corpus, tmp_path / "s", other, val_fraction=0.3)["reused"]  # reuse off: always written


PEAK = textwrap.dedent("""
    import resource, sys
    from minilm.data.pipeline import prepare_corpus
    from minilm.data.pretrain import PretrainBatches
    from minilm.data.shards import TokenShards
    from minilm.tokenizer import Tokenizer
    corpus, out, tok = sys.argv[1:4]
    prepare_corpus(corpus, out, Tokenizer.load(tok), val_fraction=0.05)
    train = TokenShards(out, "train")
    for objective in ("clm", "mlm+nsp"):
        data = PretrainBatches(train, objective, 64, 32)
        for step in range(20):
            data.batch(step)
    print(len(train.tokens), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
""")


def test_memory_stays_flat_for_a_10x_corpus(tmp_path, bpe):
    """Tokenizing into shards and drawing batches from them: a corpus 10x larger (about 1 MB vs
    10 MB of text, 0.6M vs 6.3M tokens) raises peak RSS by less than a fixed 48 MiB (measured:
    about 32 MiB, much of it pages of the memory-mapped files, which RSS counts). Reading the same
    two corpora into memory (read_documents + TokenizedCorpus) raised it by 166 MiB."""
    bpe.save(tmp_path / "tok.json")
    (tmp_path / "peak.py").write_text(PEAK)
    result = {}
    for scale in (1, 10):
        corpus = write_corpus(tmp_path / f"c{scale}.txt", docs=1500 * scale)
        proc = subprocess.run([sys.executable, str(tmp_path / "peak.py"), str(corpus), str(tmp_path / f"s{scale}"), str(tmp_path / "tok.json")],
                              capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""})
        assert proc.returncode == 0, proc.stderr[-2000:]
        tokens, peak_kib = map(int, proc.stdout.split())
        result[scale] = (tokens, peak_kib)
    assert result[10][0] > 9 * result[1][0]
    growth_mib = (result[10][1] - result[1][1]) / 1024
    assert growth_mib < 48, result
