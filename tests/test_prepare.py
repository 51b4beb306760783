"""The data preparation tool (python -m minilm.data.prepare) on a deliberately dirty file: each
cleaning step, the stratified split, the leakage report, files finetune.py reads, and memory that
does not grow with the file."""

import json
import random
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from minilm.data import prepare
from minilm.data.tasks import read_examples

ROOT = Path(__file__).resolve().parent.parent
WORDS = "river stone cloud apple north field quiet bright market engine garden silver window winter island letter".split()


def sentence(rng, n=12):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def dirty_csv(path: Path) -> Path:
    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(200):
        rows.append(f"{sentence(rng, 30 if i == 9 else 12)},{'pos' if i % 4 else 'neg'}")   # 150 pos, 50 neg
    rows += [
        rows[1].replace(",", ",", 1),                      # an exact duplicate of row 1 (line 202)
        rows[2].upper().replace("POS", "pos"),             # the same text in capitals: a duplicate too (203)
        rows[3].rsplit(",", 1)[0] + ",neg",                 # row 3's text with another label: conflicting (204)
        "  lots   of\tspaces here  ,pos",                     # normalised (205)
        ",pos",                                            # an empty text (206)
        "only text no label,",                               # an empty label (207)
        "one,two,three",                                     # three fields (208)
    ]
    near = rows[10].rsplit(",", 1)[0].split()
    near[-1] = "zebra"                                       # the last of 30 words changed: a near duplicate (209)
    rows.append(" ".join(near) + ",pos")
    path.write_bytes(("\n".join(rows) + "\n").encode() + b"caf\xe9 latin-1,pos\n")  # not UTF-8 (210)
    return path


def args_for(path, out, **changes):
    base = dict(file=str(path), text_col="text", label_col="label", out=str(out), dev=0.1, test=0.1, seed=0, near=0.8, leak=0.5,
                min_words=1, max_words=0, remove_stopwords=False, tokenizer="minilm-mini", max_len=8)
    return Namespace(**{**base, **changes})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("prepare")
    src = dirty_csv(d / "dirty.csv")
    return src, d / "out", prepare.prepare(args_for(src, d / "out"))


def test_every_cleaning_step_is_counted_and_named(prepared):
    src, out, report = prepared
    assert report["read"] == 209  # data rows (lines 2 to 210)
    assert report["corrupt"]["count"] == 4
    assert report["corrupt"]["examples"] == [f"{src}:206: field 'text' is empty", f"{src}:207: field 'label' is empty",
                                             f"{src}:208: expected 2 fields (text, label), found 3", f"{src}:210: not UTF-8 text"]
    assert report["exact_duplicates"] == 3
    assert report["conflicting_labels"]["count"] == 1 and f"{src}:204: label 'neg', but {src}:4 has the same text" in report["conflicting_labels"]["examples"][0]
    assert report["near_duplicates"]["count"] >= 1 and f"{src}:209 is a near duplicate of {src}:11" in report["near_duplicates"]["examples"]
    assert report["kept"] == 209 - 4 - 3 - report["near_duplicates"]["count"]
    texts = [e.text for name in ("train", "dev", "test") for e in read_examples(out / f"{name}.tsv")]
    assert "lots of spaces here" in texts and len(texts) == report["kept"]


def test_the_split_is_stratified_exactly_and_seeded(prepared, tmp_path):
    src, out, report = prepared
    splits = report["splits"]
    pos = sum(s["labels"].get("pos", 0) for s in splits.values())
    neg = sum(s["labels"].get("neg", 0) for s in splits.values())
    for name in ("dev", "test"):
        assert splits[name]["labels"] == {"neg": round(neg * 0.1), "pos": round(pos * 0.1)}
    again = prepare.prepare(args_for(src, tmp_path / "again"))
    assert (tmp_path / "again" / "dev.tsv").read_text() == (out / "dev.tsv").read_text() and again["splits"] == splits
    other = prepare.prepare(args_for(src, tmp_path / "other", seed=1))
    assert (tmp_path / "other" / "dev.tsv").read_text() != (out / "dev.tsv").read_text() and other["splits"]["dev"]["labels"] == splits["dev"]["labels"]


def test_files_and_reports_are_written(prepared):
    _, out, report = prepared
    assert json.loads((out / "report.json").read_text()) == report
    text = (out / "report.txt").read_text()
    assert "exact duplicates dropped: 3" in text and "unknown-token rate" in text
    assert report["tokens"]["over_max_len"] > 0 and report["tokens"]["p50"] > 8
    assert report["vocabulary"]["words"] >= len(WORDS)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # the working database is gone


def test_minhash_estimates_jaccard():
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = a.replace("today", "again")
    true = len(set(zip(*[a.split()[i:] for i in range(3)])) & set(zip(*[b.split()[i:] for i in range(3)]))) / \
        len(set(zip(*[a.split()[i:] for i in range(3)])) | set(zip(*[b.split()[i:] for i in range(3)])))
    assert abs(prepare.similarity(prepare.signature(a), prepare.signature(b)) - true) < 0.12
    assert prepare.similarity(prepare.signature(a), prepare.signature(a.upper())) == 1.0
    assert prepare.similarity(prepare.signature(a), prepare.signature("completely different words in this one")) < 0.1


def test_leakage_across_splits_is_reported(tmp_path):
    store = prepare.Store(tmp_path / "s.sqlite")
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    for line, text, split in [(2, base, "train"), (3, base.replace("mu", "nu"), "test"), (4, "a different sentence entirely here", "dev")]:
        sig = prepare.signature(text)
        store.add(line, text, "x", sig, line, prepare.band_keys(sig))
    store.db.executemany("UPDATE rows SET split = ? WHERE line = ?", [("train", 2), ("test", 3), ("dev", 4)])
    found = prepare.leakage(store, 0.5)
    assert found["count"] == 1 and found["examples"][0].startswith("line 2 (train) and line 3 (test): similarity")


def test_stop_words_and_length_filters(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "label": "a"}) for t in
                             ["the cat is not on the mat", "a", "one two three four five six seven eight", "is the of"]) + "\n\n")
    report = prepare.prepare(args_for(src, tmp_path / "o", remove_stopwords=True, max_words=5, dev=0, test=0, near=0))
    assert report["empty_after_cleaning"] == 2  # "a" and "is the of" are all stop words
    assert report["too_long"] == 1
    assert [e.text for e in read_examples(tmp_path / "o" / "train.tsv")] == ["cat mat"]


def test_the_documented_dirty_example_reports_what_its_page_shows(tmp_path):
    """docs/examples/dirty_reviews.csv through the command of bench/results/prepare_dirty.md: the
    report's text is the page's, line for line."""
    page = (ROOT / "bench" / "results" / "prepare_dirty.md").read_text()
    command = next(line for line in page.splitlines() if line.startswith("python -m minilm.data.prepare"))
    argv = command.split()[3:]
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    subprocess.run([sys.executable, "-m", "minilm.data.prepare", *argv], cwd=ROOT, check=True, capture_output=True)
    report = (tmp_path / "out" / "report.txt").read_text().strip()
    shown = page.split("report.txt`:\n\n```\n")[1].split("\n```")[0].strip()
    assert report == shown
    counts = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [counts["corrupt"]["count"], counts["exact_duplicates"], counts["near_duplicates"]["count"], counts["leakage"]["count"]] == [3, 3, 2, 1]
    assert "Works as described, nothing more, nothing less.\tpositive\n" in "".join(
        (tmp_path / "out" / f"{s}.tsv").read_text() for s in ("train", "dev", "test"))


def test_bad_arguments_and_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare.parse_args(["f.csv", "--out", "o", "--dev", "0.6", "--test", "0.5"])
    assert "--dev and --test must be fractions" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        prepare.main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert "missing.csv: no such file" in str(e.value.code)
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as e:
        prepare.main([str(tmp_path / "x.txt"), "--out", str(tmp_path / "o")])
    assert "unknown file type" in str(e.value.code)


def test_files_as_users_have_them(tmp_path):
    """A byte that is not UTF-8 inside a quoted field spoils that record alone; old Mac line endings
    read; a header without the columns, or a file of which nothing is kept, is an error, not empty splits."""
    rows = b"".join(b"good movie number %d,pos\nbad film number %d,neg\n" % (i, i) for i in range(5))
    src = tmp_path / "q.csv"
    src.write_bytes(b'text,label\n"first line\ncaf\xe9 second line",pos\n' + rows)
    report = prepare.prepare(args_for(src, tmp_path / "q", dev=0, test=0, near=0))
    assert report["corrupt"]["examples"] == [f"{src}:2: not UTF-8 text"] and report["kept"] == 10
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b"text,label\r" + rows.replace(b"\n", b"\r"))
    assert prepare.prepare(args_for(mac, tmp_path / "mac", dev=0, test=0, near=0))["kept"] == 10
    semi = tmp_path / "semi.csv"
    semi.write_text("text;label\ngreat;pos\n")
    with pytest.raises(SystemExit) as e:
        prepare.main([str(semi), "--label-col", "label", "--out", str(tmp_path / "semi")])
    assert "semi.csv:1: no field 'text', 'label' (found: text;label)" in str(e.value.code)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n,pos\nok,\n")
    with pytest.raises(SystemExit) as e:
        prepare.main([str(empty), "--label-col", "label", "--out", str(tmp_path / "empty")])
    assert f"empty.csv: no row kept of 2 read (the first unreadable: {empty}:2: field 'text' is empty)" in str(e.value.code)


PEAK = """
import resource, sys
from argparse import Namespace
from minilm.data import prepare
prepare.prepare(Namespace(file=sys.argv[1], text_col="text", label_col="label", out=sys.argv[2], dev=0.1, test=0.1, seed=0, near=0.8,
                leak=0.5, min_words=1, max_words=0, remove_stopwords=False, tokenizer=sys.argv[3], max_len=128))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_does_not_grow_with_the_file(tmp_path):
    """A file 10x larger (1,500 vs 15,000 rows of 40 words) raises peak RSS by far less than the
    text itself would take held in Python strings."""
    (tmp_path / "peak.py").write_text(PEAK)
    tok = ROOT / "minilm" / "pretrained" / "minilm-mini" / "tokenizer.json"
    peaks = {}
    for scale in (1, 10):
        rng = np.random.default_rng(scale)
        vocab = np.array([f"w{i}" for i in range(5000)])
        lines = ["text,label"] + [" ".join(rng.choice(vocab, 40)) + f",{'ab'[i % 2]}" for i in range(1500 * scale)]
        (tmp_path / f"f{scale}.csv").write_text("\n".join(lines) + "\n")
        proc = subprocess.run([sys.executable, str(tmp_path / "peak.py"), str(tmp_path / f"f{scale}.csv"), str(tmp_path / f"o{scale}"), str(tok)],
                              capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""})
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[scale] = int(proc.stdout.split()[-1]) / 1024  # MiB
    size_mib = (tmp_path / "f10.csv").stat().st_size / 2**20
    assert peaks[10] - peaks[1] < 24, (peaks, size_mib)
