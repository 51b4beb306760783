"""Dynamic int8 quantisation on the CPU: dev accuracy and prediction speed of fine-tuned classifiers,
float32 beside int8 (`infer.py predict --quantize int8`).

    python bench/pretraining_helps.py                     # fine-tunes runs/pretraining-helps/*
    python bench/int8.py                                  # WordNet supersense and SST-2, their pretrained runs
    python bench/int8.py --ckpt runs/my-classifier --dev dev.tsv --text-col sentence --name mine

For each checkpoint the whole dev set is labelled by the float32 model and by its int8 copy (every
nn.Linear quantised per output channel; see minilm/inference/quantize.py), taking turns --repeats times; the
speed is the median wall time of a full pass, in examples per second.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.data.tasks import read_examples  # noqa: E402
from minilm.inference import predict  # noqa: E402
from minilm.inference.quantize import linear_weight_bytes, quantize  # noqa: E402
from report import machine, write_results  # noqa: E402

DEFAULTS = {  # name: (checkpoint, dev file)
    "WordNet supersense": (ROOT / "runs" / "pretraining-helps" / "wordnet-pretrained", ROOT / "data" / "wordnet" / "supersense" / "dev.tsv.gz"),
    "SST-2": (ROOT / "runs" / "pretraining-helps" / "sst-2-pretrained", ROOT / "data" / "sst2" / "dev.tsv"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", help="a classifier checkpoint (repeatable; default: the two runs above)")
    p.add_argument("--dev", action="append", help="its dev file, in the same order as --ckpt")
    p.add_argument("--name", action="append", help="its name in the table, in the same order as --ckpt")
    p.add_argument("--text-col", default="text", help="column of the text (default: %(default)s)")
    p.add_argument("--label-col", default="label", help="column of the label (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "int8.json"), help="results JSON; a .md table beside it")
    args = p.parse_args(argv)
    if args.ckpt:
        if not args.dev or len(args.dev) != len(args.ckpt):
            p.error("give one --dev per --ckpt")
        args.runs = list(zip(args.name or [Path(c).name for c in args.ckpt], args.ckpt, args.dev))
    else:
        args.runs = [(name, str(c), str(d)) for name, (c, d) in DEFAULTS.items()]
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for name, ckpt, dev in args.runs:
        model, tk = predict.load(ckpt)
        variants = {"float32": model, "int8": quantize(model)}
        examples = read_examples(dev, args.text_col, None, args.label_col)
        texts, gold = [e.text for e in examples], [e.label for e in examples]
        times, accuracy = {v: [] for v in variants}, {}
        with torch.no_grad():
            for v, m in variants.items():  # warm-up pass, and the labels
                predicted = [r["label"] for r in predict.predict_texts(m, tk, texts, batch_size=args.batch_size)]
                accuracy[v] = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
            for _ in range(args.repeats):
                for v, m in variants.items():
                    start = time.perf_counter()
                    predict.predict_texts(m, tk, texts, batch_size=args.batch_size)
                    times[v].append(time.perf_counter() - start)
        base = statistics.median(times["float32"])
        for v, m in variants.items():
            t = statistics.median(times[v])
            rows.append({"task": name, "checkpoint": ckpt, "variant": v, "dev_examples": len(texts), "dev_accuracy": accuracy[v],
                         "seconds": t, "examples_per_s": len(texts) / t, "speedup": base / t, "linear_weight_mb": linear_weight_bytes(m) / 2**20})
            print(f"{name}: {v:8s} dev accuracy {accuracy[v]:.2%}  {len(texts) / t:8.1f} examples/s  x{base / t:.2f}", flush=True)
    where = machine()
    lines = [f"Dynamic int8 vs float32 on the CPU ({where}); median of {args.repeats} passes over the dev set.", "",
             "| task | variant | dev accuracy | examples/s | speed-up | Linear weights |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['variant']} | {r['dev_accuracy']:.2%} | {r['examples_per_s']:.1f} | x{r['speedup']:.2f} | "
              f"{r['linear_weight_mb']:.1f} MB |" for r in rows]
    write_results(args.out, {"machine": where, "repeats": args.repeats, "rows": rows}, lines)

if __name__ == "__main__":
    main()
