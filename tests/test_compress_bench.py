"""bench/compress.py's measuring half, on tiny models standing in for its trained rows (`--reuse`
reads them instead of training): every row measured, the int8 row from the distilled student, the
table and JSON written; and its training half's commands, as it would run them."""

import json
import sys
from pathlib import Path

from conftest import load_file, tiny_model
from minilm.checkpoint import save_pretrained
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["teacher", "pruned", "student", "student-distilled", "sparse-50", "sparse-80"]
WORDS = "a good bad film movie very it was".split()


def compress():
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))  # its `report` module, as when run as a script
    return load_file(ROOT / "bench" / "compress.py", "compress")


def test_every_row_is_measured_side_by_side(tmp_path, monkeypatch):
    data = tmp_path / "sst2"
    data.mkdir()
    rows = "".join(f"{'a very good film' if i % 2 else 'a bad movie it was'}\t{i % 2}\n" for i in range(40))
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    tk = Tokenizer.from_vocab([*SPECIAL_TOKENS, *WORDS])
    runs = tmp_path / "runs"
    for k, name in enumerate(ROWS):  # the teacher wider than the rest, as all-MiniLM is
        model = tiny_model("encoder", "cls", seed=k, vocab_size=tk.vocab_size, n_labels=2, labels=["0", "1"],
                           n_embd=64 if name == "teacher" else 32)
        save_pretrained(runs / "sst2" / name, model, tk)
    ran, bench = [], compress()
    monkeypatch.setattr(bench, "run", lambda command, log: ran.append(command))
    out = tmp_path / "compress.json"
    bench.main(["--task", "sst2", "--data", str(data), "--teacher-init", "TEACHER", "--runs", str(runs), "--reuse",
                "--repeats", "2", "--max-batches", "1", "--out", str(out)])
    assert ran == []  # every row was there: nothing trained
    report = json.loads(out.read_text())
    assert list(report["rows"]) == [*ROWS[:4], "student-distilled-int8", *ROWS[4:]]
    for r in report["rows"].values():
        assert 0 <= r["dev_accuracy"] <= 1 and r["size_mb"] > 0 and r["examples_per_s"] > 0
    teacher, student, int8 = (report["rows"][n] for n in ("teacher", "student-distilled", "student-distilled-int8"))
    assert teacher["vs_teacher_points"] == 0 and teacher["speedup"] == 1
    assert int8["size_mb"] < student["size_mb"] and teacher["parameters"] > student["parameters"]
    table = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in table for name in report["rows"])
    assert report["machine"] in table and report["repeats"] == 2

    (runs / "sst2" / "pruned" / "model.safetensors").unlink()  # a row without its model is trained again: pruning, then recovery
    files = ["--train", data / "train.tsv", "--dev", data / "dev.tsv", "--text-col", "sentence"]
    settings = dict(teacher_init="TEACHER", teacher_steps=10, recovery_epochs="1", reuse=True)
    bench.train_rows(bench.argparse.Namespace(**settings, transfer_copies=0), runs / "sst2", files)
    assert [c[1:3] for c in ran] == [["-m", "minilm.training.prune"], [ROOT / "finetune.py", "--task"]]
    assert "--teacher" in ran[1] and str(ran[1][ran[1].index("--init") + 1]).endswith("pruned-raw")

    ran.clear()  # the transfer-set student: the teacher labels EDA copies, in as many steps as the other students
    save_pretrained(runs / "sst2" / "pruned", tiny_model("encoder", "cls", vocab_size=tk.vocab_size, n_labels=2, labels=["0", "1"]), tk)
    bench.train_rows(bench.argparse.Namespace(**settings, transfer_copies=2), runs / "sst2", files)
    command, prune, recovery = ran  # then the distilled student pruned, and its recovery on the same transfer set
    assert command[-1] == runs / "sst2" / "student-distilled-eda" and "--teacher" in command
    assert command[command.index("--augment") + 1:command.index("--augment") + 6] == ["eda", "--augment-copies", 2, "--epochs", "0.8"]
    assert prune[prune.index("--ckpt") + 1] == command[-1] and recovery[recovery.index("--init") + 1] == prune[prune.index("--out") + 1]
    assert recovery[recovery.index("--epochs") + 1] == "0.33" and "--teacher" in recovery and recovery[-1] == runs / "sst2" / "student-pruned"
    for k, name in enumerate(["student-distilled-eda", "student-pruned"]):
        save_pretrained(runs / "sst2" / name, tiny_model("encoder", "cls", seed=9 + k, vocab_size=tk.vocab_size, n_labels=2,
                                                         labels=["0", "1"], n_embd=32), tk)
    bench.main(["--task", "sst2", "--data", str(data), "--teacher-init", "TEACHER", "--runs", str(runs), "--reuse", "--transfer-copies", "2",
                "--repeats", "1", "--max-batches", "1", "--out", str(out)])
    assert list(json.loads(out.read_text())["rows"]) == [*ROWS[:4], "student-distilled-int8", "student-distilled-eda",
                                                         "student-distilled-eda-int8", "student-pruned", *ROWS[4:]]
