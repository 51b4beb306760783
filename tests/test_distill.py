"""Knowledge distillation (minilm/training/distill.py, finetune.py --teacher): the loss is the equation of its
docstring, alpha = 0 is plain fine-tuning, the teacher is run once, and a student learns from a
teacher for cls, regression and ner, with unlabeled text labelled by the teacher."""

import json
import random

import pytest
import torch
import torch.nn.functional as F

import finetune
from minilm.objectives import IGNORE_INDEX
from minilm.tokenizer import Tokenizer
from minilm.training import distill
from minilm.training.finetuning import task_loss
from test_scripts import TINY, TOPICS, write_task
from test_tagging import write_tagged


class Fixed(torch.nn.Module):
    """A 'model' whose output is a given tensor (the loss sees only forward_task's output)."""

    def __init__(self, out):
        super().__init__()
        self.out = torch.nn.Parameter(out.clone())
        self.config = type("C", (), {"arch": "encoder"})()

    def forward(self, input_ids, attention_mask=None, segment_ids=None):
        return self.out


def batch_of(**extra):
    return {"input_ids": torch.zeros(3, 2, dtype=torch.long), "attention_mask": torch.ones(3, 2, dtype=torch.long), **extra}


def test_cls_loss_is_the_equation():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(3, 4), torch.randn(3, 4)
    labels = torch.tensor([1, IGNORE_INDEX, 3])  # the second row is unlabeled text
    alpha, T = 0.3, 2.5
    parts = distill.distillation_loss("cls", alpha, T)(Fixed(z_s), batch_of(labels=labels, teacher=z_t))
    p_t = F.softmax(z_t / T, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(z_s / T, -1))).sum()
    ce = F.cross_entropy(z_s[[0, 2]], labels[[0, 2]], reduction="sum")
    assert torch.allclose(parts["kd"][0], alpha * T * T * kl, atol=1e-6) and parts["kd"][1] == 3
    assert torch.allclose(parts["ce"][0], (1 - alpha) * ce, atol=1e-6) and parts["ce"][1] == 2
    assert {k: int(v) for k, v in distill.distillation_targets("cls")(batch_of(labels=labels, teacher=z_t)).items()} == {"ce": 2, "kd": 3}


def test_regression_loss_is_the_equation():
    y_s, y_t, y = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([1.0, 2.5, 3.0]), torch.tensor([0.0, float("nan"), 5.0])
    parts = distill.distillation_loss("regression", 0.25, 2.0)(Fixed(y_s), batch_of(labels=y, teacher=y_t))
    assert torch.allclose(parts["kd"][0], 0.25 * ((y_s - y_t) ** 2).sum()) and parts["kd"][1] == 3
    assert torch.allclose(parts["mse"][0], 0.75 * torch.tensor(0.25 + 1.0)) and parts["mse"][1] == 2  # the NaN label is unlabeled


def test_ner_loss_reads_first_subwords_only():
    torch.manual_seed(1)
    z_s, z_t = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    z_t[0, 1] = float("nan")  # a later subword, or a word the teacher's positions cut off
    labels = torch.tensor([[2, IGNORE_INDEX], [0, 4], [1, 3]])
    parts = distill.distillation_loss("ner", 0.5, 1.0)(Fixed(z_s), batch_of(labels=labels, teacher=z_t))
    keep = torch.isfinite(z_t).all(-1).flatten()
    flat_s, flat_t = z_s.flatten(0, 1)[keep], z_t.flatten(0, 1)[keep]
    kl = F.kl_div(F.log_softmax(flat_s, -1), F.log_softmax(flat_t, -1), log_target=True, reduction="sum")
    assert torch.allclose(parts["kd"][0], 0.5 * kl) and parts["kd"][1] == 5 and parts["ce"][1] == 5


def test_alpha_zero_is_plain_fine_tuning():
    torch.manual_seed(2)
    z_s, z_t, labels = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 3])
    plain, distilled = Fixed(z_s), Fixed(z_s)
    (task_loss("cls")(plain, batch_of(labels=labels))["ce"][0] / 3).backward()
    parts = distill.distillation_loss("cls", 0.0, 2.0)(distilled, batch_of(labels=labels, teacher=z_t))
    sum(s / n for s, n in parts.values()).backward()
    assert torch.allclose(plain.out.grad, distilled.out.grad)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A teacher fine-tuned from scratch with a fixed word-level vocabulary: a WordPiece vocabulary
    trained on 400 texts differs from process to process (huggingface/tokenizers#1794), and with it
    the students below (one such draw held the unlabeled-text student at 0.675)."""
    d = tmp_path_factory.mktemp("teacher")
    tr, dv = write_task(d / "train.tsv", 400, 1), write_task(d / "dev.tsv", 80, 2)
    words = ["the", "here", *(w for topic in sorted(TOPICS) for w in TOPICS[topic])]
    Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]).save(d / "tokenizer.json")
    finetune.main(["--init", "scratch", "--train", str(tr), "--dev", str(dv), "--out", str(d / "cls"),
                   "--epochs", "6", "--lr", "2e-3", "--batch-size", "16", *TINY, "--tokenizer", str(d / "tokenizer.json")])
    return d, tr, dv


def test_a_student_learns_from_a_teacher_with_unlabeled_text(tmp_path, teacher, monkeypatch, capsys):
    d, tr, dv = teacher
    few = tmp_path / "few.tsv"
    few.write_text("\n".join(tr.read_text().splitlines()[:13]) + "\n")  # 12 labelled examples
    unlabeled = tmp_path / "unlabeled.tsv"
    unlabeled.write_text("text\n" + "\n".join(line.split("\t")[0] for line in tr.read_text().splitlines()[13:]) + "\n")
    calls = []
    real = distill.teacher_outputs
    monkeypatch.setattr(distill, "teacher_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = finetune.main(["--init", "scratch", "--train", str(few), "--dev", str(dv), "--out", str(tmp_path / "student"),
                            "--teacher", str(d / "cls"), "--unlabeled", str(unlabeled), "--distill-alpha", "0.7",
                            "--epochs", "3", "--lr", "2e-3", "--batch-size", "16", *TINY, "--tokenizer", str(d / "cls")])
    captured = capsys.readouterr()
    out = captured.out
    assert "teacher:" in captured.err  # its progress bar over the 400 examples' batches
    assert "unlabeled" in out and "388 examples, for the teacher's term only" in out
    assert "teacher " in out and "400 examples scored" in out and "alpha = 0.7" in out
    assert calls == [1]  # the teacher ran once, before training
    # 12 labels and a teacher: the student learned the topics (1.0 seen; chance: 25%; the 12 labels alone, --distill-alpha 0: 0.35)
    teacher_accuracy = json.loads((d / "cls" / "metrics.json").read_text())["dev"]["accuracy"]
    assert result["dev"]["accuracy"] >= 0.9, f"the student {result['dev']['accuracy']:.3f}, its teacher {teacher_accuracy:.3f}"
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["labels"] == sorted(TOPICS)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_teacher_scores_in_the_runs_precision(tmp_path, teacher, monkeypatch, dtype):
    """--dtype bf16: the teacher's outputs are computed under bf16 autocast, as the run's evaluations are."""
    d, tr, dv = teacher
    seen = []
    real = distill.teacher_outputs

    def spy(*a, **k):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real(*a, **k)

    monkeypatch.setattr(distill, "teacher_outputs", spy)
    finetune.main(["--init", "scratch", "--train", str(tr), "--out", str(tmp_path / "s"), "--teacher", str(d / "cls"),
                   "--max-steps", "2", "--batch-size", "16", *TINY, "--dtype", dtype])
    assert seen == [torch.bfloat16 if dtype == "bf16" else torch.float32]


def test_distilled_regression_and_ner_train(tmp_path):
    rng = random.Random(0)
    rows = ["a,score"] + [f"{' '.join(['dog'] * (n := rng.randint(0, 4)) + ['cat'] * (4 - n))},{n / 4:.2f}" for _ in range(300)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    common = ["--epochs", "4", "--lr", "2e-3", *TINY]
    reg = ["--task", "regression", "--init", "scratch", "--train", str(tmp_path / "r.csv"), "--dev", str(tmp_path / "r.csv"), "--text-col", "a", "--label-col", "score"]
    finetune.main([*reg, "--out", str(tmp_path / "rt"), *common])
    student = finetune.main([*reg, "--out", str(tmp_path / "rs"), "--teacher", str(tmp_path / "rt"), *common])
    assert student["dev"]["pearson"] > 0.8

    tr, dv = write_tagged(tmp_path / "train.conll", 400, 1), write_tagged(tmp_path / "dev.conll", 80, 2)
    ner = ["--task", "ner", "--init", "scratch", "--train", str(tr), "--dev", str(dv), "--vocab-size", "200", "--batch-size", "16",
           "--epochs", "6", "--lr", "2e-3", *TINY]
    taught = finetune.main([*ner, "--out", str(tmp_path / "nt")])
    student = finetune.main([*ner, "--out", str(tmp_path / "ns"), "--teacher", str(tmp_path / "nt")])
    assert taught["dev"]["f1"] >= 0.9 and student["dev"]["f1"] >= 0.9


def test_a_teacher_with_other_labels_is_refused(tmp_path, teacher, capsys):
    d, tr, dv = teacher
    other = tmp_path / "other.tsv"
    other.write_text("text\tlabel\n" + "".join(f"text {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    with pytest.raises(SystemExit) as e:
        finetune.main(["--init", "scratch", "--train", str(other), "--out", str(tmp_path / "s"), "--teacher", str(d / "cls"), *TINY])
    message = str(e.value.code)
    assert message.startswith(f"error: --teacher {d / 'cls'}: its labels") and "do not match the student's ['no', 'yes']" in message


@pytest.mark.parametrize("flags, message", [
    (["--distill-alpha", "0.6"], "--distill-alpha applies with --teacher only"),
    (["--teacher", "t", "--distill-alpha", "1.5"], "--distill-alpha must lie in [0, 1]"),
    (["--teacher", "t", "--distill-temperature", "0"], "--distill-temperature must be a positive number"),
    (["--teacher", "t", "--task", "sft", "--train", "x.jsonl"], "--teacher applies to --task cls, regression, ner"),
    (["--teacher", "t", "--task", "ner", "--train", "x.conll", "--unlabeled", "u.tsv"], "--unlabeled applies to cls and regression"),
])
def test_bad_distillation_flags(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--train", "x.tsv", *flags] if "--train" not in flags else flags)
    assert message in capsys.readouterr().err


def test_the_gradient_is_the_written_out_one():
    """d/dz_s of alpha T^2 KL(p_t || softmax(z_s / T)) + (1 - alpha) CE(z_s, y) is
    alpha T (softmax(z_s / T) - p_t) + (1 - alpha) (softmax(z_s) - onehot(y)), row by row."""
    torch.manual_seed(3)
    z_s, z_t, labels = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    alpha, T = 0.6, 3.0
    model = Fixed(z_s)
    parts = distill.distillation_loss("cls", alpha, T)(model, batch_of(labels=labels, teacher=z_t))
    (parts["kd"][0] + parts["ce"][0]).backward()
    expected = alpha * T * (F.softmax(z_s / T, -1) - F.softmax(z_t / T, -1)) + (1 - alpha) * (F.softmax(z_s, -1) - F.one_hot(labels, 4))
    assert torch.allclose(model.out.grad, expected, atol=1e-6)
