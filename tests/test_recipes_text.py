"""The text dataset recipes data/wikitext2/prepare.py and data/tinystories/prepare.py, run on the
local copies in the shared data folder (skipped when it is absent): token shards that decode back
to the source text, counts that match the files, and the errors a user can hit."""

import random
from pathlib import Path

import numpy as np
import pytest

from conftest import load_file
from minilm.data.shards import TokenShards, is_shard_dir

ROOT = Path(__file__).resolve().parent.parent


def load_recipe(name):
    """Import data/<name>/prepare.py as a module (the data folders are not packages)."""
    return load_file(ROOT / "data" / name / "prepare.py", f"prepare_{name}")


def document_text(shards, d):
    """Document d of a split, decoded: its lines joined by the newline token, [EOS] left out."""
    first, last = shards.doc_start[d], shards.doc_start[d + 1]
    start, end = shards.lines[first][0], shards.lines[last - 1][1]
    assert shards.tokens[end] == shards.tokenizer.eos_id  # every document ends with [EOS]
    return shards.tokenizer.decode(shards.tokens[start:end])


def check_files_match_meta(directory, meta):
    """The sizes of the .bin files are what meta.json says they hold."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split, n in meta["splits"].items():
        size = lambda kind: (directory / f"{split}.{kind}.bin").stat().st_size  # noqa: E731
        assert size("tokens") == n["tokens"] * itemsize
        assert size("lines") == n["lines"] * 2 * 8
        assert size("docs") == (n["documents"] + 1) * 8
        assert size("counts") == meta["vocab_size"] * 8
        shards = TokenShards(directory, split)
        assert shards.counts().sum() == n["tokens"]
        assert (shards.n_docs, shards.n_lines) == (n["documents"], n["lines"])


def exit_message(excinfo):
    return str(excinfo.value.code)


# ----------------------------------------------------------------------------- WikiText-2

def test_wikitext2_valid_alone_is_split_by_articles(shared_data, tmp_path):
    wt = load_recipe("wikitext2")
    valid = shared_data / "wikitext2" / "valid.txt"
    meta = wt.main(["--val", str(valid), "--out", str(tmp_path), "--vocab-size", "300"])

    # the standard file's size, and the articles and lines measured on it
    assert meta["source"]["file_counts"]["val"] == {
        "file": str(valid), "lines": 3760, "tokens": 217_646, "articles": 60, "kept_lines": 2461}
    assert meta["source"]["split_by_articles_every"] == 10
    train, val = TokenShards(tmp_path, "train"), TokenShards(tmp_path, "val")
    assert (train.n_docs, val.n_docs) == (54, 6)  # every 10th article to val
    assert (train.n_lines, val.n_lines) == (2313, 148)
    check_files_match_meta(tmp_path, meta)

    lines = [" ".join(line.split()) for line in valid.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    titles = [line for line in lines if line.startswith("= ") and not line.startswith("= =")]
    assert document_text(train, 0).startswith(
        "= Homarus gammarus =\nHomarus gammarus , known as the European lobster or common lobster , is a species of <unk>")
    assert document_text(val, 0).startswith(titles[9] + "\n")   # the 10th article
    assert document_text(val, 5).endswith("\n" + lines[-1])      # the 60th, the file's last line
    assert document_text(train, 53).startswith(titles[58] + "\n")


def test_wikitext2_title_needs_an_empty_line_before_it(shared_data):
    """test.txt has 62 lines shaped like ' = Title = ', two of them inside a formula: 60 articles."""
    wt = load_recipe("wikitext2")
    stats = {}
    articles = list(wt.read_articles(shared_data / "wikitext2" / "test.txt", stats))
    assert len(articles) == 60
    assert stats == {"lines": 4358, "tokens": 245_569, "articles": 60, "kept_lines": 2891}
    formula = next(a for a in articles if "= 1 <unk> / s and a nominal <unk> k =" in a)
    assert formula[0] == "= Constant k filter ="


def test_wikitext2_errors_name_the_file(tmp_path, monkeypatch):
    wt = load_recipe("wikitext2")
    missing = tmp_path / "wiki.valid.tokens"
    with pytest.raises(SystemExit) as e:
        wt.main(["--val", str(missing), "--out", str(tmp_path / "out")])
    assert exit_message(e) == f"error: --val {missing}: no such file"

    not_wikitext = tmp_path / "notes.txt"
    not_wikitext.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        wt.main(["--train", str(not_wikitext), "--out", str(tmp_path / "out")])
    assert str(not_wikitext) in exit_message(e) and "no article title line" in exit_message(e)

    with pytest.raises(SystemExit) as e:   # a single file needs 10 articles to give val one
        few = tmp_path / "few.txt"
        few.write_text(" \n = A = \n \n Some text . \n \n = B = \n \n More text . \n", encoding="utf-8")
        wt.main(["--val", str(few), "--out", str(tmp_path / "out"), "--vocab-size", "300"])
    assert exit_message(e).startswith(f"error: the val split is empty: {few} has too few articles")
    assert not is_shard_dir(tmp_path / "out")

    # offline: the download fails, and the message says how to go on without it
    monkeypatch.setattr(wt, "URL", f"file://{tmp_path}/offline/{{name}}.txt")
    with pytest.raises(SystemExit) as e:
        wt.main(["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert "could not download" in exit_message(e) and "--train wiki.train.tokens" in exit_message(e)
    assert list((tmp_path / "cache").iterdir()) == []   # no partial file left behind


# ----------------------------------------------------------------------------- TinyStories

def sample_stories(path):
    """The sample's stories, parsed here independently of the recipe."""
    chunks = path.read_text(encoding="utf-8").split("<|endoftext|>")
    stories = ["\n".join(" ".join(line.split()) for line in chunk.splitlines() if line.strip()) for chunk in chunks]
    return [story for story in stories if story]


def test_tinystories_every_story_in_exactly_one_split(shared_data, tmp_path):
    ts = load_recipe("tinystories")
    sample = shared_data / "tinystories_sample" / "tinystories_sample.txt"
    meta = ts.main(["--input", str(sample), "--val-fraction", "0.4", "--seed", "0",
                    "--out", str(tmp_path), "--vocab-size", "300"])
    assert meta["source"]["file_counts"] == {str(sample): {"stories": 5, "lines": 18}}
    check_files_match_meta(tmp_path, meta)

    stories = sample_stories(sample)
    assert len(set(stories)) == 5
    train, val = TokenShards(tmp_path, "train"), TokenShards(tmp_path, "val")
    decoded = {split: [document_text(s, d) for d in range(s.n_docs)] for split, s in (("train", train), ("val", val))}
    assert sorted(decoded["train"] + decoded["val"]) == sorted(stories)   # each story once, unchanged
    draw = random.Random(0)
    expected_val = [story for story in stories if draw.random() < 0.4]     # the documented draw
    assert decoded["val"] == expected_val and 0 < len(expected_val) < 5
    assert train.n_lines + val.n_lines == 18


def test_tinystories_download_is_streamed_to_the_cache(shared_data, tmp_path, monkeypatch, capsys):
    ts = load_recipe("tinystories")
    sample = shared_data / "tinystories_sample" / "tinystories_sample.txt"
    monkeypatch.setattr(ts, "URL", sample.as_uri())   # stands in for the Hugging Face URL
    args = ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--vocab-size", "300",
            "--val-fraction", "0.4"]
    ts.main(args)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["TinyStories-valid.txt"]
    assert (tmp_path / "cache" / "TinyStories-valid.txt").read_bytes() == sample.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(ts, "URL", f"file://{tmp_path}/offline/{{name}}")
    ts.main(args)   # the file in the cache is used, not fetched again
    assert "downloaded earlier" in capsys.readouterr().out


def test_tinystories_errors(shared_data, tmp_path, monkeypatch):
    ts = load_recipe("tinystories")
    sample = shared_data / "tinystories_sample" / "tinystories_sample.txt"
    missing = tmp_path / "TinyStories-train.txt"
    with pytest.raises(SystemExit) as e:
        ts.main(["--input", str(sample), str(missing), "--out", str(tmp_path / "out")])
    assert exit_message(e) == f"error: --input {missing}: no such file"

    with pytest.raises(SystemExit) as e:   # 5 stories, 5% held out: none is drawn for val
        ts.main(["--input", str(sample), "--out", str(tmp_path / "out"), "--vocab-size", "300"])
    assert "the val split is empty" in exit_message(e) and "raise --val-fraction" in exit_message(e)
    assert not is_shard_dir(tmp_path / "out")

    with pytest.raises(SystemExit) as e:
        ts.main(["--input", str(sample), "--val-fraction", "1.5"])
    assert "--val-fraction must be between 0 and 1" in exit_message(e)

    monkeypatch.setattr(ts, "URL", f"file://{tmp_path}/offline/{{name}}")
    with pytest.raises(SystemExit) as e:
        ts.main(["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert "could not download" in exit_message(e) and "--input TinyStories-valid.txt" in exit_message(e)
    assert list((tmp_path / "cache").iterdir()) == []   # no partial file left behind


def test_tinyshakespeare_recipe_is_the_text_cut_90_10(shared_data, tmp_path):
    """The char-level shards decode back to input.txt exactly, cut where nanoGPT cuts it."""
    from minilm.data.shards import TokenShards

    source = shared_data / "tinyshakespeare" / "input.txt"
    recipe = load_recipe("tinyshakespeare")
    recipe.main(["--input", str(source), "--out", str(tmp_path)])
    train, val = TokenShards(tmp_path, "train"), TokenShards(tmp_path, "val")
    tk = train.tokenizer
    assert tk.vocab_size == 104 and train.tokens.dtype.name == "uint16"
    assert (len(train.tokens) - 1, len(val.tokens) - 1) == (1_003_854, 111_540)  # less one [EOS] each
    text = source.read_text(encoding="utf-8")
    assert tk.decode(train.tokens[:-1].tolist()) + tk.decode(val.tokens[:-1].tolist()) == text
