"""Learning from few labels: k examples per class, several seeds, one row per method.

    python bench/kshot.py --task sst2 --data ../shared/data/sst2 --k 64 --methods head,eda,fgm
    python bench/kshot.py --task supersense --k 16,64,256 --seeds 0,1,2,3,4 --methods head,lora,eda,fgm

As in LM-BFF (Gao et al. 2021): for each k and seed, k training examples of every class are drawn
from the task's training file, and a development set of the same size from the rest of it (it
picks the best evaluation, as a user with k labels would have no more); the score is on the task's
own held-out file (SST-2: its dev set, since its test labels are not public; supersense: its test
set). Reported: mean and standard deviation over the seeds.

Methods (each one `finetune.py` process from the same checkpoint, the same steps and batch):
    head   fine-tuning with a new classifier head (the defaults)
    prompt prompt-based fine-tuning through the MLM head (LM-BFF; the template and words in PROMPTS)
    lora   LoRA (rank 8 on q and v) and the head; the encoder frozen
    eda    head fine-tuning on the texts and --augment-copies EDA copies of each (WordNet synonyms)
    fgm    head fine-tuning with FGM adversarial training on the token embeddings (--epsilon)
    adalora AdaLoRA (initial rank 12, mean rank 8 at the end, on q and v) and the head; the encoder frozen
and, with no update of any weight (`infer.py classify`, the prompt of PROMPTS):
    zero-shot   the encoder's MLM head scores each label's word at the template's [MASK]; it
                sees no example, so it runs once per task, whatever k and the seed
    in-context  the decoder (--decoder) reads --demos demonstrations drawn from the seed's k-shot
                training examples before each test text, and scores each label's word after it
                (GPT-3's in-context learning; LM-BFF's baseline)
    in-context-calibrated   the same with contextual calibration (`--calibrate`, Zhao et al. 2021):
                each label's score less its score for the content-free text "N/A"
Results: a JSON file (every run) and a Markdown table beside it. Runs already in the JSON file stay (with
the same settings), so k and methods can be added one call at a time; a run again replaces its row.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.data.tasks import read_examples  # noqa: E402
from minilm.files import atomic_write_json, atomic_write_text  # noqa: E402

TASKS = {  # name: (train file, held-out file, text column) given the --data folder
    "sst2": ("train.tsv", "dev.tsv", "sentence"),
    "supersense": ("train.tsv.gz", "test.tsv.gz", "text"),
}
SUPERSENSE_WORDS = {c: c for c in ("act animal attribute body communication event feeling food group location motive object person "
                                    "phenomenon plant possession process quantity relation shape state substance time").split()}
SUPERSENSE_WORDS.update(artifact="device", cognition="idea")  # one token each in minilm-mini's vocabulary
PROMPTS = {  # task: (template, verbaliser) of the prompt method
    "sst2": ("{text} It was [MASK].", "1=great,0=bad"),
    "supersense": ("{text}. It is a kind of [MASK].", ",".join(f"noun.{c}={w}" for c, w in sorted(SUPERSENSE_WORDS.items()))),
}
METHODS = {
    "head": [],
    "prompt": [],  # --template and --verbalizer of PROMPTS
    "lora": ["--peft", "lora", "--lr", "1e-3"],
    "eda": ["--augment", "eda"],
    "fgm": ["--adversarial", "fgm"],
    "adalora": ["--peft", "adalora", "--lr", "1e-3"],
    "zero-shot": None,  # infer.py classify: no training
    "in-context": None,
    "in-context-calibrated": None,
}


def sample(rows, k: int, seed: int) -> tuple[list, list]:
    """k rows of every label for training and k more for development, drawn with `seed` (fewer
    where a label has fewer than 2k rows: half of them each)."""
    by_label = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    rng = random.Random(seed)
    train, dev = [], []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n = min(k, len(group) // 2)
        train += group[:n]
        dev += group[n : 2 * n]
    rng.shuffle(train)
    return train, dev


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))


def prompt(args, method: str, train: Path, test: Path, out: Path, seed: int) -> dict:
    """Accuracy of `infer.py classify` on the held-out file, no weight updated."""
    template, verbalizer = PROMPTS[args.task]
    command = [sys.executable, str(ROOT / "infer.py"), "classify", "--template", template, "--labels", verbalizer,
               "--file", str(test), "--text-col", "text", "--label-col", "label", "--json"]
    if method == "zero-shot":
        command += ["--ckpt", args.init]
    else:
        command += ["--ckpt", args.decoder, "--shots", str(train), "--k", str(args.demos), "--seed", str(seed)]
        command += ["--calibrate"] if method == "in-context-calibrated" else []
    start = time.perf_counter()
    reused = args.reuse and out.is_file()
    if not reused:
        report = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, report)
    report = json.loads(out.read_text())
    return {"dev": None, "test": report["accuracy"], "majority": report["majority_accuracy"],
            "seconds": None if reused else round(time.perf_counter() - start, 1)}


def run(args, method: str, train: Path, dev: Path, test: Path, out: Path) -> dict:
    extra = list(METHODS[method])
    if method == "eda":
        extra += ["--augment-copies", str(args.augment_copies)]
    if method == "fgm" and args.epsilon is not None:
        extra += ["--epsilon", str(args.epsilon)]
    if method == "prompt":
        template, verbalizer = PROMPTS[args.task]
        extra += ["--template", template, "--verbalizer", verbalizer]
    else:
        extra += ["--pooling", "mean"]  # a new head reads the mean, finetune.py's default when the results were measured
    command = [sys.executable, str(ROOT / "finetune.py"), "--init", args.init, "--train", str(train), "--dev", str(dev),
               "--test", str(test), "--text-col", "text", "--out", str(out), "--max-steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--eval-every", str(args.eval_every), *extra]
    start = time.perf_counter()
    reused = args.reuse and (out / "metrics.json").is_file()
    if not reused:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out / "metrics.json").read_text())
    return {"dev": result["dev"]["accuracy"], "test": result["test"]["accuracy"],
            "seconds": None if reused else round(time.perf_counter() - start, 1)}


SETTINGS = ("task", "init", "steps", "batch_size", "test_examples", "augment_copies", "epsilon")


def earlier_runs(out: Path, results: dict) -> list[dict]:
    """The runs already in the results file, when it was written with the same settings: a run of
    this call replaces the one of the same k, seed and method, and the others stay in the table."""
    if not out.is_file():
        return []
    earlier = json.loads(out.read_text())
    differ = [f"{key} {earlier.get(key)!r} there, {results[key]!r} here" for key in SETTINGS if earlier.get(key) != results[key]]
    if differ:
        sys.exit(f"error: {out} holds runs with other settings ({'; '.join(differ)}): give another --out, or remove it")
    return earlier["runs"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="supersense", help="the task (default: %(default)s)")
    p.add_argument("--data", type=Path, help="the task's folder (default: data/wordnet/supersense for supersense; required for sst2)")
    p.add_argument("--init", default="minilm-mini", help="the checkpoint every method starts from (default: %(default)s)")
    p.add_argument("--k", default="64", help="examples per class, comma-separated (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="draws of the k examples (also the fine-tuning seed), comma-separated (default: %(default)s)")
    p.add_argument("--methods", default="head,eda,fgm", help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of every run (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=50, help="evaluate on the sampled dev set every N steps; the best is kept (default: %(default)s)")
    p.add_argument("--augment-copies", type=int, default=8, help="eda: copies per example (default: %(default)s)")
    p.add_argument("--epsilon", type=float, help="fgm: the perturbation's length (default: finetune.py's)")
    p.add_argument("--decoder", default="minilm-mini-decoder", help="in-context: the decoder that reads the demonstrations (default: %(default)s)")
    p.add_argument("--demos", type=int, default=4, help="in-context: demonstrations before each text, drawn from the k-shot examples (default: %(default)s)")
    p.add_argument("--reuse", action="store_true", help="read the metrics of runs already in --runs instead of training them again")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "kshot", help="where the runs go (default: %(default)s)")
    p.add_argument("--out", type=Path, help="results JSON (default: bench/results/kshot_<task>.json)")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}: expected {', '.join(METHODS)}")
    if args.data is None:
        if args.task != "supersense":
            p.error("--data is required for sst2 (the folder with train.tsv and dev.tsv)")
        args.data = ROOT / "data" / "wordnet" / "supersense"
    out = args.out or ROOT / "bench" / "results" / f"kshot_{args.task}.json"
    train_name, test_name, text_col = TASKS[args.task]
    rows = [(e.text, e.label) for e in read_examples(args.data / train_name, text_col, None, "label")]
    held_out = [(e.text, e.label) for e in read_examples(args.data / test_name, text_col, None, "label")]
    args.runs.mkdir(parents=True, exist_ok=True)
    test = args.runs / f"{args.task}-test.jsonl"
    write_jsonl(test, held_out)

    results = {"task": args.task, "init": args.init, "steps": args.steps, "batch_size": args.batch_size, "test_examples": len(held_out),
               "augment_copies": args.augment_copies, "epsilon": args.epsilon, "runs": []}
    results["runs"] = earlier_runs(out, results)
    for k in [int(x) for x in args.k.split(",")]:
        for seed in [int(x) for x in args.seeds.split(",")]:
            train, dev = sample(rows, k, seed)
            folder = args.runs / f"{args.task}-k{k}-s{seed}"
            write_jsonl(folder / "train.jsonl", train)
            write_jsonl(folder / "dev.jsonl", dev)
            for method in methods:
                if method == "zero-shot":  # no example seen: one run per task
                    if any(r["method"] == method for r in results["runs"]):
                        continue
                    r = prompt(args, method, None, test, args.runs / f"{args.task}-zero-shot.json", seed)
                elif method.startswith("in-context"):
                    r = prompt(args, method, folder / "train.jsonl", test, folder / f"{method}-{args.demos}.json", seed)
                else:
                    r = run(args, method, folder / "train.jsonl", folder / "dev.jsonl", test, folder / method)
                k_used = 0 if method == "zero-shot" else k
                if method.startswith("in-context"):
                    r.update(decoder=args.decoder, demos=args.demos)
                row = {"k": k_used, "seed": seed, "method": method, "train": len(train) if k_used else 0, **r}
                results["runs"] = [x for x in results["runs"] if (x["k"], x["seed"], x["method"]) != (k_used, seed, method)] + [row]
                took = "reused" if r["seconds"] is None else f"{r['seconds']:.0f}s"
                dev_note = "" if r["dev"] is None else f"dev {r['dev']:.4f}, "
                print(f"k={k_used} seed={seed} {method}: test {r['test']:.4f} ({dev_note}{took})", flush=True)
                atomic_write_json(out, results)
    majority = max(Counter(y for _, y in held_out).values()) / len(held_out)
    table = ["| k per class | method | test accuracy, mean +- std | runs |", "|---|---|---|---|",
             f"| | majority class | {100 * majority:.2f} | |"]
    for k in sorted({r["k"] for r in results["runs"]}):
        for method in METHODS:
            scores = [r["test"] for r in results["runs"] if r["k"] == k and r["method"] == method]
            if not scores:
                continue
            sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
            table.append(f"| {k} | {method} | {100 * statistics.mean(scores):.2f} +- {100 * sd:.2f} | {len(scores)} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(table) + "\n")
    print("\n".join(table))
    return results


if __name__ == "__main__":
    main()
