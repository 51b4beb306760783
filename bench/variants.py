"""The attention and norm variants at equal steps: a small decoder trained with each on the WordNet
corpus, held-out loss after the same number of steps, the same data and the same seed.

    python bench/variants.py                            # 300 steps each, about two minutes per variant on 2 cores
    python bench/variants.py --steps 1000 --variants baseline,gqa --out /tmp/variants.json

Every run: `train.py --arch decoder --objective clm` on data/wordnet/corpus.txt.gz (shipped with
minilm) with the shipped decoder's tokenizer, a 4 x 4 x 128 shape, sequences of 64, batch 32, peak
lr 1e-3, seed 0; the corpus is tokenized into shards once and every variant reads them. Results:
a JSON file and a Markdown table beside it.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_results  # noqa: E402

VARIANTS = {  # name: train.py flags on top of the baseline (multi-head attention, learned positions, LayerNorm)
    "baseline": [],
    "gqa": ["--n-kv-head", "2"],
    "mqa": ["--n-kv-head", "1"],
    "qk_norm": ["--qk-norm"],
    "parallel": ["--parallel-block"],
    "albert": ["--share-layers"],
    "moe 4 x top-2": ["--mlp", "moe", "--moe-experts", "4", "--moe-top-k", "2"],
    "window 16": ["--attn-window", "16"],
    "rope": ["--pos", "rope"],
    "alibi": ["--pos", "alibi"],
    "scalenorm (plugin)": ["--plugin", str(ROOT / "docs" / "examples" / "scalenorm.py"), "--norm", "scalenorm"],
}
SHAPE = ["--arch", "decoder", "--objective", "clm", "--preset", "mini", "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
         "--seq-len", "64", "--batch-size", "32", "--lr", "1e-3", "--dropout", "0", "--seed", "0", "--dtype", "auto"]


def train(flags: list, out: Path, log: Path) -> str:
    command = [sys.executable, str(ROOT / "train.py"), *SHAPE, *flags, "--out", str(out)]
    print("$", " ".join(command), flush=True)
    with open(log, "w") as f:
        subprocess.run(command, check=True, stdout=f, stderr=subprocess.STDOUT)
    return log.read_text()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="training steps per variant (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--reuse", action="store_true", help="read variants already trained to --steps in --runs instead of training them again")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "variants", help="where the runs go (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "variants.json", help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.runs.mkdir(parents=True, exist_ok=True)
    tokenizer = ROOT / "minilm" / "pretrained" / "minilm-mini-decoder" / "tokenizer.json"
    shards = args.runs / "shards"
    if not (shards / "data").is_dir():
        train(["--data", str(ROOT / "data" / "wordnet" / "corpus.txt.gz"), "--tokenizer", str(tokenizer), "--max-steps", "1",
               "--eval-batches", "1"], shards, args.runs / "shards.log")
    rows = {}
    for name in chosen:
        out = args.runs / re.sub(r"\W+", "-", name).strip("-")
        finished = out.with_suffix(".log").is_file() and "done in" in out.with_suffix(".log").read_text()
        if args.reuse and finished and f"at step {args.steps}:" in out.with_suffix(".log").read_text():
            print(f"reusing {out}", flush=True)
            log = out.with_suffix(".log").read_text()
        else:
            log = train(["--data", str(shards / "data"), "--max-steps", str(args.steps), "--eval-every", str(args.steps),
                         "--eval-batches", "50", *VARIANTS[name]], out, out.with_suffix(".log"))
        seconds = re.search(r"done in (\d+)s", log)
        last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
        params = json.loads((out / "config.json").read_text())
        rows[name] = {"flags": VARIANTS[name], "val_loss": last["val_loss"], "val_ppl": last.get("val_ppl"),
                      "seconds": float(seconds.group(1)) if seconds else None, "config": {k: params[k] for k in ("n_kv_head", "qk_norm", "pos", "norm")}}
    result = {"machine": machine(), "steps": args.steps, "shape": SHAPE, "rows": rows}
    lines = [f"A 4 x 4 x 128 decoder, {args.steps} steps of 32 x 64 tokens on the WordNet corpus, seed 0; held-out loss "
             f"(50 batches). Machine: {result['machine']}.", "",
             "| variant | flags | held-out loss | perplexity | train wall |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        flags = " ".join(f for f in r["flags"] if not f.endswith(".py")) or "(none)"
        wall = f"{r['seconds']:.0f} s" if r["seconds"] else ""
        lines.append(f"| {name} | `{flags}` | {r['val_loss']:.3f} | {r['val_ppl']:.1f} | {wall} |")
    write_results(args.out, result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
