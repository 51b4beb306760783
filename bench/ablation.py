"""Which pretraining pays, at equal CPU time: MLM, MLM + NSP and ELECTRA on all corpora, and MLM on
the WordNet corpus alone; each encoder then fine-tuned on WordNet supersense and SST-2 (dev accuracy).

    python bench/ablation.py --budget-min 10 --sst2 ../shared/data/sst2
    python bench/ablation.py --budget-min 10 --arms mlm,electra --reuse        # read finished arms again

Every arm trains the `mini` shape from scratch with minilm-mini's tokenizer (one vocabulary for all,
so that only the objective or the text differs) on token shards built once per corpus set. Equal
time: a 40-step calibration run of each arm, all arms back to back before any of them trains (the
machine's speed drifts over an hour), measures its seconds per step (ELECTRA's generator and NSP's
pairs cost more per step than MLM), and the arm then trains for budget / (seconds per step) steps,
the schedule of minilm-mini's first run scaled to that many (peak lr 1e-3, 6% warmup, cosine to
1e-4, batch 64 x 128, bf16 where the CPU has it). Fine-tuning takes the same flags for every arm
(2 epochs, lr 5e-4, batch 64; finetune.py's defaults otherwise). Results: a JSON file and a
Markdown table.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import atomic_write_json, atomic_write_text  # noqa: E402

CORPORA = {
    "all": [ROOT / "data" / "wordnet" / "corpus.txt.gz", ROOT / "data" / "gcide" / "corpus.txt.gz", ROOT / "data" / "prose" / "corpus.txt.gz"],
    "wordnet": [ROOT / "data" / "wordnet" / "corpus.txt.gz"],
}
ARMS = {  # name: (objective, corpus set, extra train.py flags)
    "mlm": ("mlm", "all", ["--whole-word-masking"]),
    "mlm+nsp": ("mlm+nsp", "all", ["--whole-word-masking"]),
    "electra": ("electra", "all", ["--whole-word-masking"]),
    "mlm-wordnet": ("mlm", "wordnet", ["--whole-word-masking"]),
}
FINETUNE = ["--epochs", "2", "--lr", "5e-4", "--batch-size", "64", "--pooling", "mean"]  # finetune.py's defaults when the first arm ran, pinned
SHAPE = ["--preset", "mini", "--batch-size", "64", "--seq-len", "128", "--dtype", "auto", "--attn-impl", "math", "--dropout", "0"]


def run(command: list, log: Path) -> str:
    print("$", " ".join(map(str, command)), flush=True)
    with open(log, "w") as f:
        subprocess.run([str(c) for c in command], check=True, stdout=f, stderr=subprocess.STDOUT)
    return log.read_text()


def train_seconds(log: str) -> tuple[float, int]:
    match = re.search(r"done in (\d+)s at step (\d+)", log)
    if not match:
        raise RuntimeError("train.py did not report its time")
    return float(match.group(1)), int(match.group(2))


def shards(corpus_set: str, runs: Path, tokenizer: Path) -> Path:
    """Token shards of a corpus set, written once by a zero-step train.py run and reused."""
    out = runs / f"shards-{corpus_set}"
    if not (out / "data").is_dir():
        run([sys.executable, ROOT / "train.py", "--objective", "mlm", "--data", *CORPORA[corpus_set], "--tokenizer", tokenizer,
             "--max-steps", "1", "--eval-batches", "1", *SHAPE, "--out", out], runs / f"shards-{corpus_set}.log")
    return out / "data"


def finetune(init: Path, out: Path, sst2: Path | None) -> dict:
    """Dev accuracy of finetune.py (FINETUNE's flags) on supersense and, given its folder, SST-2."""
    result = {}
    tasks = {"supersense": []}
    if sst2:
        tasks["sst2"] = ["--train", sst2 / "train.tsv", "--dev", sst2 / "dev.tsv", "--text-col", "sentence"]
    for task, files in tasks.items():
        folder = out.with_name(f"{out.name}-{task}")
        start = time.perf_counter()
        run([sys.executable, ROOT / "finetune.py", "--task", "cls", "--init", init, *files, *FINETUNE, "--out", folder], folder.with_suffix(".log"))
        metrics = json.loads((folder / "metrics.json").read_text())
        result[task] = {"dev_accuracy": metrics["dev"]["accuracy"], "seconds": round(time.perf_counter() - start)}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=10, help="pretraining minutes per arm (default: %(default)s)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"arms, comma-separated, from {', '.join(ARMS)} (default: all)")
    p.add_argument("--sst2", type=Path, help="SST-2 folder with train.tsv and dev.tsv (for example ../shared/data/sst2); without it, supersense only")
    p.add_argument("--tokenizer", type=Path, default=ROOT / "minilm" / "pretrained" / "minilm-mini" / "tokenizer.json",
                   help="the one tokenizer of every arm (default: minilm-mini's)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation", help="where the arms' runs go (default: %(default)s)")
    p.add_argument("--reuse", action="store_true", help="read arms already finished in --runs instead of training them again")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablation.json", help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if args.sst2 and not (args.sst2 / "train.tsv").is_file():
        p.error(f"--sst2 {args.sst2}: no train.tsv there")
    args.runs.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.reuse and args.out.is_file() else {}
    results.update({"budget_min": args.budget_min, "shape": SHAPE, "tokenizer": str(args.tokenizer)})
    rows = results.setdefault("arms", {})
    todo = [arm for arm in arms if not (args.reuse and arm in rows)]
    for arm in set(arms) - set(todo):
        print(f"reusing {arm}", flush=True)
    base, pace = {}, {}
    for arm in todo:  # every arm's calibration first, back to back: the machine's speed drifts over an hour
        objective, corpus_set, extra = ARMS[arm]
        data = shards(corpus_set, args.runs, args.tokenizer)
        base[arm] = [sys.executable, ROOT / "train.py", "--objective", objective, "--data", data, *extra, *SHAPE]
        calib = run([*base[arm], "--max-steps", "40", "--eval-every", "40", "--eval-batches", "1", "--out", args.runs / f"{arm}-calibration"],
                    args.runs / f"{arm}-calibration.log")
        pace[arm] = train_seconds(calib)
    for arm in todo:
        objective, corpus_set, _ = ARMS[arm]
        seconds, steps = pace[arm]
        max_steps = max(50, int(args.budget_min * 60 / (seconds / steps)))
        out = args.runs / arm
        log = run([*base[arm], "--max-steps", max_steps, "--lr", "1e-3", "--eval-every", max(1, max_steps // 4), "--save-every", 250,
                   "--out", out], args.runs / f"{arm}.log")
        trained_s, _ = train_seconds(log)
        last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
        rows[arm] = {"objective": objective, "corpora": corpus_set, "s_per_step": seconds / steps, "steps": max_steps,
                     "train_seconds": trained_s, "val": {k: v for k, v in last.items() if k.startswith(("val", "mlm", "nsp", "rtd", "disc", "gen"))},
                     **finetune(out, out, args.sst2)}
        atomic_write_json(args.out, results)
    lines = [f"Pretraining at equal CPU time ({args.budget_min:g} min per arm), then `finetune.py` with {' '.join(FINETUNE)}; dev accuracy.", "",
             "| arm | objective | corpora | steps | s/step | supersense dev | SST-2 dev |", "|---|---|---|---|---|---|---|"]
    for arm, r in rows.items():
        sst2 = f"{r['sst2']['dev_accuracy']:.2%}" if "sst2" in r else ""
        lines.append(f"| {arm} | {r['objective']} | {r['corpora']} | {r['steps']:,} | {r['s_per_step']:.2f} | {r['supersense']['dev_accuracy']:.2%} | {sst2} |")
    atomic_write_json(args.out, results)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
