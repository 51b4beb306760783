"""Compression for deployment, one table: accuracy, checkpoint size and CPU examples/s of a teacher
and of what distillation, structured and unstructured pruning and int8 make of it.

    python bench/compress.py --teacher-init PATH/TO/all-MiniLM-L6-v2 --task sst2 --data ../shared/data/sst2
    python bench/compress.py --teacher-init PATH/TO/all-MiniLM-L6-v2 --task supersense --teacher-steps 4100   # 2 epochs
    python bench/compress.py ... --reuse          # measure the runs already in --runs again, training nothing
    python bench/compress.py ... --transfer-copies 2      # and a student distilled on a teacher-labelled transfer set

Rows (each trained by the command it prints, into --runs/<task>/<row>):

    teacher            finetune.py --init TEACHER --lr 5e-5 --max-steps --teacher-steps
    pruned             python -m minilm.training.prune --heads 0.5 --ffn 0.5, then finetune.py --init pruned
                       --teacher teacher (recovery, distilled) for --recovery-epochs
    student            finetune.py with its defaults (from minilm-mini)
    student-distilled  the same with --teacher teacher
    student-distilled-int8   the distilled student with dynamic int8 Linear layers (no training)
    student-distilled-eda    with --transfer-copies N: the student distilled on a transfer set (Tang et al.
                       2019), the training texts and N EDA copies of each (--augment eda), all labelled
                       by the teacher, for 2.4 / (N + 1) epochs: as many steps as the other students;
                       and its int8 row
    student-pruned     with --transfer-copies N: student-distilled-eda with half its heads and feed-forward
                       neurons removed, then recovery distilled on the transfer set for 1 / (N + 1) epochs
                       (one pass's worth of steps over the training texts) at lr 1e-4
    sparse-50, sparse-80     finetune.py --init teacher --sparsity 0.5 / 0.8 for --recovery-epochs
                       (gradual magnitude pruning: dense weights, zeros)

Measured in this process, side by side: dev accuracy, the size of model.safetensors (for int8: its
float weights less the Linear weights' fp32 bytes plus their int8 bytes), and examples/s at batch 32
on the dev texts with 2 threads: the models take turns batch by batch over --repeats passes, and
the median pass time counts.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import from_pretrained  # noqa: E402
from minilm.data.tasks import ClassificationData, label_ids, read_examples  # noqa: E402
from minilm.inference.quantize import linear_weight_bytes, quantize  # noqa: E402
from minilm.inference.task_outputs import forward_task  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402
from minilm.training.finetuning import evaluate_task  # noqa: E402
from report import machine, write_results  # noqa: E402

TASKS = {  # name: (train, dev, text column) relative to --data
    "sst2": ("train.tsv", "dev.tsv", "sentence"),
    "supersense": ("train.tsv.gz", "dev.tsv.gz", "text"),
}


STUDENT_EPOCHS = 2.4  # finetune.py's default --epochs, which the students train with


def run(command, log: Path):
    print("$", " ".join(map(str, command)), flush=True)
    with open(log, "w") as f:
        subprocess.run([str(c) for c in command], check=True, stdout=f, stderr=subprocess.STDOUT)


def prune(ckpt: Path, out: Path, files: list) -> list:
    """The command that removes half the heads and half the feed-forward neurons of ckpt, by their importance on the training texts."""
    return [sys.executable, "-m", "minilm.training.prune", "--ckpt", ckpt, "--out", out, "--heads", "0.5", "--ffn", "0.5",
            "--train", files[1], "--text-col", files[files.index("--text-col") + 1]]


def train_rows(args, runs: Path, files: list):
    """Train the rows (those missing from `runs` with --reuse): the teacher first, which the others need, then the students."""
    ft = [sys.executable, ROOT / "finetune.py", "--task", "cls", "--pooling", "mean", *files]  # the default pooling when the results were measured
    rows = {}
    teacher = runs / "teacher"
    rows["teacher"] = [ft + ["--init", args.teacher_init, "--lr", "5e-5", "--warmup", "100", "--max-steps", args.teacher_steps,
                             "--batch-size", "32", "--eval-every", max(1, args.teacher_steps // 4), "--out", teacher]]
    rows["student"] = [ft + ["--out", runs / "student"]]
    rows["student-distilled"] = [ft + ["--teacher", teacher, "--out", runs / "student-distilled"]]
    if args.transfer_copies:
        epochs = f"{STUDENT_EPOCHS / (args.transfer_copies + 1):.4g}"
        transfer = ["--teacher", teacher, "--augment", "eda", "--augment-copies", args.transfer_copies]
        rows["student-distilled-eda"] = [ft + [*transfer, "--epochs", epochs, "--out", runs / "student-distilled-eda"]]
        rows["student-pruned"] = [prune(runs / "student-distilled-eda", runs / "student-pruned-raw", files),
                                  ft + ["--init", runs / "student-pruned-raw", *transfer, "--epochs", f"{1 / (args.transfer_copies + 1):.2g}",
                                        "--lr", "1e-4", "--out", runs / "student-pruned"]]
    rows["pruned"] = [prune(teacher, runs / "pruned-raw", files),
                      ft + ["--init", runs / "pruned-raw", "--teacher", teacher, "--lr", "1e-4", "--epochs", args.recovery_epochs, "--out", runs / "pruned"]]
    for s in ("50", "80"):
        rows[f"sparse-{s}"] = [ft + ["--init", teacher, "--sparsity", f"0.{s}", "--lr", "5e-5", "--epochs", args.recovery_epochs,
                                     "--out", runs / f"sparse-{s}"]]
    for name, commands in rows.items():
        if args.reuse and (runs / name / "model.safetensors").is_file():
            continue
        for k, command in enumerate(commands):
            run(command, runs / f"{name}-{k}.log")


def size_mb(folder: Path, model, int8: bool) -> float:
    size = (folder / "model.safetensors").stat().st_size
    if int8:  # the fp32 Linear weights become int8 ones (plus a scale per row)
        size -= linear_weight_bytes(from_pretrained(folder))
        size += linear_weight_bytes(model)
    return size / 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASKS), required=True)
    p.add_argument("--data", type=Path, help="the task's folder (default: data/wordnet/supersense for supersense)")
    p.add_argument("--teacher-init", required=True, help="the teacher's starting checkpoint, e.g. a Hugging Face all-MiniLM-L6-v2 directory")
    p.add_argument("--teacher-steps", type=int, default=1500, help="the teacher's fine-tuning steps at batch 32 (default: %(default)s)")
    p.add_argument("--recovery-epochs", default="1", help="epochs of recovery fine-tuning after pruning (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "compress", help="where the runs go (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the dev batches (default: %(default)s)")
    p.add_argument("--max-batches", type=int, default=40, help="dev batches of 32 timed per pass (default: %(default)s)")
    p.add_argument("--reuse", action="store_true", help="skip rows whose run folder already holds a model")
    p.add_argument("--transfer-copies", type=int, default=0, metavar="N",
                   help="also distil the student on the training texts plus N EDA copies of each, labelled by the teacher "
                        "(rows student-distilled-eda, its int8 and student-pruned; default: %(default)s, none)")
    p.add_argument("--out", type=Path, help="results JSON (default: bench/results/compress_<task>.json)")
    args = p.parse_args(argv)
    if args.transfer_copies < 0:
        p.error(f"--transfer-copies must be >= 0, got {args.transfer_copies}")
    torch.set_num_threads(2)
    data = args.data or (ROOT / "data" / "wordnet" / "supersense" if args.task == "supersense" else None)
    if data is None:
        p.error(f"--task {args.task} needs --data (the folder of {TASKS[args.task][0]} and {TASKS[args.task][1]})")
    train, dev, col = TASKS[args.task]
    runs = args.runs / args.task
    runs.mkdir(parents=True, exist_ok=True)
    files = ["--train", data / train, "--dev", data / dev, "--text-col", col]
    train_rows(args, runs, files)

    names = ["teacher", "pruned", "student", "student-distilled", "sparse-50", "sparse-80"]
    if args.transfer_copies:
        names[4:4] = ["student-distilled-eda", "student-pruned"]
    models = {}  # each distilled student followed by its int8 copy
    for name in names:
        models[name] = from_pretrained(runs / name)
        if name.startswith("student-distilled"):
            models[f"{name}-int8"] = quantize(from_pretrained(runs / name), "int8")
    folder_of = {name: runs / name.removesuffix("-int8") for name in models}
    rows = {}
    for name, model in models.items():
        tokenizer = Tokenizer.load(folder_of[name])
        labels = list(model.config.labels)
        examples = read_examples(data / dev, col, None, "label")
        dev_data = ClassificationData(examples, tokenizer, label_ids(examples, labels), 128, 32)
        report = evaluate_task("cls", model, dev_data, labels)
        rows[name] = {"dev_accuracy": report["accuracy"], "size_mb": size_mb(folder_of[name], model, name.endswith("int8")),
                      "parameters": sum(p.numel() for p in from_pretrained(folder_of[name]).parameters())}
        print(f"{name}: dev accuracy {report['accuracy']:.2%}", flush=True)
    # throughput: each model reads the dev texts through its own tokenizer, in the same batches of 32
    batches = {}
    for name in models:
        tokenizer = Tokenizer.load(folder_of[name])
        examples = read_examples(data / dev, col, None, "label")[: 32 * args.max_batches]
        batches[name] = [b for _, b in ClassificationData(examples, tokenizer, None, 128, 32).by_length()]
    n = sum(len(b["input_ids"]) for b in batches["teacher"])
    times = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(args.repeats):
            for k in range(len(batches["teacher"])):
                for name, model in models.items():
                    start = time.perf_counter()
                    forward_task(model, batches[name][k])
                    times[name].append((k, time.perf_counter() - start))
    for name in models:
        per_pass = [sum(t for k, t in times[name][i * len(batches[name]):(i + 1) * len(batches[name])]) for i in range(args.repeats)]
        rows[name]["examples_per_s"] = n / statistics.median(per_pass)
    teacher = rows["teacher"]
    for r in rows.values():
        r["vs_teacher_points"] = 100 * (r["dev_accuracy"] - teacher["dev_accuracy"])
        r["speedup"] = r["examples_per_s"] / teacher["examples_per_s"]
    where = machine()
    out = args.out or ROOT / "bench" / "results" / f"compress_{args.task}.json"
    lines = [f"Machine: {where}. Dev accuracy in float32; examples/s at batch 32, the median of {args.repeats} passes, the models "
             f"taking turns batch by batch.", "",
             f"| {args.task} | dev accuracy | vs teacher | size (MB) | examples/s (batch 32) | speed-up |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['dev_accuracy']:.2%} | {r['vs_teacher_points']:+.1f} | {r['size_mb']:.1f} | {r['examples_per_s']:,.0f} | x{r['speedup']:.2f} |")
    write_results(out, {"task": args.task, "machine": where, "repeats": args.repeats, "rows": rows}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
