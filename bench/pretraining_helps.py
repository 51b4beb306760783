"""Does minilm's own pretraining help? The same encoder fine-tuned from a `train.py` checkpoint and
from scratch, with the same fine-tuning budget, on WordNet supersense and on SST-2, beside
TF-IDF + logistic regression (bench/tfidf.py) for scale.

    python train.py --max-steps 1500 --out runs/pretrain-encoder      # the pretrained checkpoint
    python data/sst2/prepare.py                                       # SST-2 (or --input DIR)
    python bench/tfidf.py && python bench/tfidf.py --data data/sst2 --out bench/results/tfidf_sst2.json
    python bench/pretraining_helps.py --init runs/pretrain-encoder

Each fine-tuning is one `finetune.py` process with the flags below; `--init scratch` gets the
pretrained checkpoint's architecture (its config.json) and a tokenizer trained on the task's
own training file, as finetune.py does. Results go to a JSON file and a Markdown table.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = {  # name: (task folder, file name of a split, TF-IDF results)
    "WordNet supersense": (ROOT / "data" / "wordnet" / "supersense", "{}.tsv.gz", ROOT / "bench" / "results" / "tfidf_supersense.json"),
    "SST-2": (ROOT / "data" / "sst2", "{}.tsv", ROOT / "bench" / "results" / "tfidf_sst2.json"),
}


def finetune(init: str, folder: Path, name: str, out: Path, shape: list[str], extra: list[str], reuse: bool = False) -> dict:
    splits = [x for s in ("train", "dev", "test") for x in (f"--{s}", str(folder / name.format(s)))]
    command = [sys.executable, str(ROOT / "finetune.py"), "--init", init, *splits, "--out", str(out), *(shape if init == "scratch" else []),
               "--pooling", "mean", *extra]  # the default pooling when the results were measured
    start = time.perf_counter()
    if reuse and (out / "metrics.json").is_file():
        print(f"reusing {out / 'metrics.json'}", flush=True)
    else:
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out / "metrics.json").read_text())
    return {"dev": result["dev"]["accuracy"], "test": result["test"]["accuracy"], "test_macro_f1": result["test"]["macro_f1"],
            "seconds": round(time.perf_counter() - start)}


def mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=str(ROOT / "runs" / "pretrain-encoder"), help="the train.py checkpoint (default: %(default)s)")
    p.add_argument("--epochs", default="2", help="fine-tuning epochs, the same for both runs (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(TASKS), help="tasks, comma-separated (default: %(default)s)")
    p.add_argument("--seeds", default="0", help="fine-tuning seeds, comma-separated; the table gives the mean (default: %(default)s)")
    p.add_argument("--reuse", action="store_true", help="read the metrics of runs already in --runs instead of training them again")
    p.add_argument("--runs", default=str(ROOT / "runs" / "pretraining-helps"), help="where the fine-tuned models go (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretraining_helps.json"), help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    config = json.loads((Path(args.init) / "config.json").read_text())
    shape = ["--n-layer", str(config["n_layer"]), "--n-head", str(config["n_head"]), "--n-embd", str(config["n_embd"]),
             "--vocab-size", str(config["vocab_size"])]
    seeds = [int(x) for x in args.seeds.split(",")]
    results = {"init": args.init, "epochs": args.epochs, "seeds": seeds, "shape": config, "tasks": {}}
    for task in args.tasks.split(","):
        folder, name, tfidf = TASKS[task]
        row = {}
        for init in ("scratch", args.init):
            key = "scratch" if init == "scratch" else "pretrained"
            runs = []
            for seed in seeds:
                extra = ["--epochs", args.epochs, "--seed", str(seed), "--dropout", "0.1"]  # finetune.py's dropout for a checkpoint, given to both
                out = Path(args.runs) / (f"{task.split()[0].lower()}-{key}" + (f"-seed{seed}" if seed else ""))
                runs.append(finetune(init, folder, name, out, shape, extra, args.reuse))
            row[key] = {"dev": mean(runs, "dev"), "test": mean(runs, "test"), "test_macro_f1": mean(runs, "test_macro_f1"), "runs": runs}
        if tfidf.exists():
            baseline = json.loads(tfidf.read_text())["tfidf_lr"]
            row["tfidf"] = {"dev": baseline["dev"]["accuracy"], "test": baseline["test"]["accuracy"], "test_macro_f1": baseline["test"]["macro_f1"]}
        results["tasks"][task] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    per = f"mean of {len(seeds)} seeds, " if len(seeds) > 1 else ""
    lines = [f"| task | from scratch ({per}dev / test) | pretrained ({per}dev / test) | TF-IDF + LR (dev / test) |", "|---|---|---|---|"]
    for task, row in results["tasks"].items():
        cells = [f"{row[k]['dev']:.1%} / {row[k]['test']:.1%}" if k in row else "" for k in ("scratch", "pretrained", "tfidf")]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
