"""bench/kshot.py's bookkeeping, without training: the k-shot draws, and results that grow one call
at a time (a call with a new k keeps the rows of the earlier ones; other settings are refused)."""

import json
from pathlib import Path

import pytest

from conftest import load_file

ROOT = Path(__file__).resolve().parent.parent


def kshot():
    return load_file(ROOT / "bench" / "kshot.py", "kshot")


def test_draws_hold_k_of_each_label_apart_from_the_dev_draw():
    ks = kshot()
    rows = [(f"text {i}", "a" if i % 3 else "b") for i in range(60)]  # 40 of a, 20 of b
    train, dev = ks.sample(rows, 8, seed=1)
    assert sorted(y for _, y in train) == ["a"] * 8 + ["b"] * 8 and sorted(y for _, y in dev) == ["a"] * 8 + ["b"] * 8
    assert not set(train) & set(dev)
    assert ks.sample(rows, 8, seed=1) == (train, dev) and ks.sample(rows, 8, seed=2) != (train, dev)
    small, _ = ks.sample(rows, 15, seed=0)  # b has 20 rows: half of them each
    assert sum(y == "b" for _, y in small) == 10


def fake_runs(ks, monkeypatch, score):
    monkeypatch.setattr(ks, "run", lambda args, method, train, dev, test, out: {"dev": score, "test": score, "seconds": 0.0})
    monkeypatch.setattr(ks, "prompt", lambda args, method, train, test, out, seed: {"dev": None, "test": score / 2, "majority": 0.5, "seconds": 0.0})


def test_a_second_call_adds_its_k_and_replaces_only_its_own_rows(tmp_path, monkeypatch):
    ks = kshot()
    data = tmp_path / "data"
    data.mkdir()
    lines = "sentence\tlabel\n" + "".join(f"text number {i}\t{i % 2}\n" for i in range(80))
    (data / "train.tsv").write_text(lines)
    (data / "dev.tsv").write_text(lines)
    common = ["--task", "sst2", "--data", str(data), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "k.json"), "--seeds", "0,1"]
    fake_runs(ks, monkeypatch, 0.6)
    ks.main([*common, "--k", "4", "--methods", "head,zero-shot"])
    fake_runs(ks, monkeypatch, 0.8)
    ks.main([*common, "--k", "8", "--methods", "head,in-context,in-context-calibrated"])
    runs = json.loads((tmp_path / "k.json").read_text())["runs"]
    assert sorted((r["k"], r["seed"], r["method"], r["test"]) for r in runs) == [
        (0, 0, "zero-shot", 0.3), (4, 0, "head", 0.6), (4, 1, "head", 0.6),
        (8, 0, "head", 0.8), (8, 0, "in-context", 0.4), (8, 0, "in-context-calibrated", 0.4), (8, 1, "head", 0.8),
        (8, 1, "in-context", 0.4), (8, 1, "in-context-calibrated", 0.4)]
    assert all(r["decoder"] == "minilm-mini-decoder" and r["demos"] == 4 for r in runs if r["method"].startswith("in-context"))
    table = (tmp_path / "k.md").read_text()
    assert "| 4 | head | 60.00 +- 0.00 | 2 |" in table and "| 8 | head | 80.00 +- 0.00 | 2 |" in table and "| 0 | zero-shot |" in table
    ks.main([*common, "--k", "4", "--seeds", "1", "--methods", "head"])  # a run again: its row replaced, not doubled
    runs = json.loads((tmp_path / "k.json").read_text())["runs"]
    assert [(r["seed"], r["test"]) for r in runs if r["k"] == 4] == [(0, 0.6), (1, 0.8)]
    with pytest.raises(SystemExit, match=r"k.json holds runs with other settings \(steps 300 there, 50 here\)"):
        ks.main([*common, "--k", "4", "--steps", "50"])


def test_in_context_methods_run_infer_classify_with_the_decoder(tmp_path, monkeypatch):
    ks = kshot()
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return ks.subprocess.CompletedProcess(command, 0, stdout=json.dumps({"accuracy": 0.3, "majority_accuracy": 0.5}))

    monkeypatch.setattr(ks.subprocess, "run", fake_run)
    args = ks.argparse.Namespace(task="sst2", decoder="DEC", demos=4, reuse=False, init="ENC")
    for method in ("in-context", "in-context-calibrated"):
        r = ks.prompt(args, method, tmp_path / "train.jsonl", tmp_path / "test.jsonl", tmp_path / f"{method}.json", seed=3)
        assert r["test"] == 0.3 and json.loads((tmp_path / f"{method}.json").read_text())["accuracy"] == 0.3
    plain, calibrated = seen
    assert plain[plain.index("--ckpt") + 1] == "DEC" and plain[plain.index("--seed") + 1] == "3" and "--calibrate" not in plain
    assert calibrated == plain + ["--calibrate"]
