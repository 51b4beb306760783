"""Pretraining throughput of the shipped encoder's recipe: which path is fastest on this machine.

    python bench/pretrain_throughput.py                  # about 3 minutes on 2 cores
    python bench/pretrain_throughput.py --steps 10 --variants "fp32 sdpa,bf16 math"

The step of `minilm/pretrained/minilm-mini/README.md`'s command: the `mini` encoder (4 x 4 x 256,
vocabulary 8192), MLM at 15% of T = 128 tokens, batch 64, `Trainer.train_step` (loss, backward,
clipping, the hand-written AdamW), in each variant of precision (fp32, bf16 autocast) and
attention (`--attn-impl sdpa`, PyTorch's fused kernel; `math`, minilm's readable softmax(QK^T)V),
eager or `--compile`. The variants take turns step by step on the same random batches; the table
gives medians after two warm-up steps. MFU is model FLOPs per second (bench/train_speed.py's
count: 6 N_dense tokens + 6 C V predicted + 12 L C T tokens) over the matmul peak of the same
dtype measured in the same run (a 2048^3 matmul). bf16 variants are left out on a CPU without
bf16 matrix instructions (they would emulate every product).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.config import from_preset  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.training.pretraining import pretraining_loss, pretraining_targets  # noqa: E402
from minilm.training.trainer import TrainArgs, Trainer, cpu_has_bf16  # noqa: E402
from report import machine, write_results  # noqa: E402
from train_speed import batches, matmul_peak, model_flops  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=256, vocab=8192, T=128, batch=64, objective="mlm")
VARIANTS = ["fp32 sdpa", "fp32 math", "bf16 sdpa", "bf16 math", "bf16 math compiled"]


def step_fn(variant: str, out_dir: str):
    dtype, attn = variant.split()[:2]
    config = from_preset("mini", arch="encoder", head="mlm", vocab_size=SHAPE["vocab"], max_seq_len=SHAPE["T"], dropout=0.0,
                         attn_dropout=0.0, attn_impl=attn)
    torch.manual_seed(0)
    model = build_model(config)
    if "compiled" in variant:
        from kernels import compile_blocks

        compile_blocks(model, dynamic=False)
    settings = TrainArgs(out=out_dir, max_steps=10**6, optimizer="adamw", lr=1e-4, weight_decay=0.01, grad_clip=1.0, dtype=dtype,
                         compile="compiled" in variant)
    trainer = Trainer(model, None, None, pretraining_loss("mlm"), pretraining_targets("mlm"), lambda m: {}, settings)
    n_dense = sum(p.numel() for n, p in model.named_parameters() if n.startswith("transformer.blocks"))
    return n_dense, lambda batch: trainer.train_step(batch, 1e-4)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (default: %(default)s)")
    p.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretrain_throughput.json"), help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    variants = args.variants.split(",") if args.variants else [v for v in VARIANTS if "bf16" not in v or cpu_has_bf16()]
    peaks = {"fp32": matmul_peak(torch.float32)}
    if any("bf16" in v for v in variants):
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    data = batches(SHAPE, args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        steps = {v: step_fn(v, tmp) for v in variants}
        times = {v: [] for v in variants}
        for i, batch in enumerate(data):
            for v, (_, fn) in steps.items():
                start = time.perf_counter()
                fn(batch)
                if i >= 2:
                    times[v].append(time.perf_counter() - start)
    tokens = SHAPE["batch"] * SHAPE["T"]
    rows = []
    for v in variants:
        seconds = statistics.median(times[v])
        flops = model_flops(SHAPE, steps[v][0]) / seconds
        rows.append({"variant": v, "ms_per_step": 1000 * seconds, "tokens_per_s": tokens / seconds, "mfu": flops / peaks[v.split()[0]]})
    where = machine()
    lines = [f"Pretraining step of the shipped encoder's recipe (mini encoder, MLM, T 128, batch 64); {where}; "
             f"matmul peak " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()) + f"; medians of {args.steps} steps",
             "", "| variant | ms/step | tokens/s | MFU |", "|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['ms_per_step']:.0f} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.0f}% |" for r in rows]
    print("\n".join(lines))
    write_results(args.out, {"machine": where, "shape": SHAPE, "peaks": peaks, "rows": rows}, lines)


if __name__ == "__main__":
    main()
