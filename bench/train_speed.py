"""Training speed: minilm's step (eager / compiled x fp32 / bf16) beside `transformers`, in one process.

    python bench/train_speed.py                          # GPT and BERT shapes, every variant (about 15 min on 2 cores)
    python bench/train_speed.py --models gpt --repeats 5 --warmup 2 --out /tmp/speed.json

Shapes (#layers x heads x width, vocabulary 8192, AdamW, gradient clipping at 1.0):
  gpt   6 x 6 x 384, T = 256, batch 8, causal LM           beside transformers GPT2LMHeadModel (SDPA)
  bert  6 x 6 x 384, T = 128, batch 16, MLM (15% targets)  beside transformers BertForMaskedLM (SDPA)

minilm runs `Trainer.train_step` (its loss, backward, hand-written clipping and AdamW); the
reference runs forward with labels, backward, clip_grad_norm_ and torch.optim.AdamW. All variants
of a shape take turns step by step on the same random batches, so drift in the machine's speed
hits them alike; the table gives medians after warm-up steps. MFU is model FLOPs per second over
the matmul peak of the same dtype, measured in the same run (a 2048^3 matmul); the first step's
time shows what compilation costs. Decoding speed is bench/decode.py's.

    FLOPs per step = 6 N_dense tokens + 6 C V (predicted tokens) + 12 L C T tokens

(N_dense: the parameters of the blocks; the head counted where a prediction is made; the last
term is attention's QK^T and AV, forward and backward; Kaplan et al. 2020, PaLM appendix B).
Peak memory is measured per variant in a fresh process (`--only`, 4 steps), as the growth of the
peak resident set over the process's size once every module it needs is imported, beside an
estimate (`memory_estimate`: weights, gradients and Adam's moments, the activations kept for
backward, the loss head's working set). Twice: with glibc's default allocator settings, whose
resident set keeps much of what was freed (heap memory is returned to the system only from its
top), and with its mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_), where every tensor of
64 KiB and more is its own mapping, returned when freed, so the resident set follows the live tensors.
minilm's GPT variants compute the LM loss in chunks of rows (`loss_impl="chunked"`).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.config import from_preset  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.objectives import IGNORE_INDEX  # noqa: E402
from minilm.training.pretraining import pretraining_loss, pretraining_targets  # noqa: E402
from minilm.training.trainer import TrainArgs, Trainer, cpu_has_bf16  # noqa: E402
from report import machine, write_results  # noqa: E402

SHAPES = {
    "gpt": dict(n_layer=6, n_head=6, n_embd=384, vocab=8192, T=256, batch=8, objective="clm"),
    "bert": dict(n_layer=6, n_head=6, n_embd=384, vocab=8192, T=128, batch=16, objective="mlm"),
}
VARIANTS = ["minilm eager fp32", "minilm eager bf16", "minilm compiled fp32", "minilm compiled bf16", "transformers fp32"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gpt,bert", help="shapes to run, comma-separated (default: %(default)s)")
    p.add_argument("--variants", help="variants, comma-separated (default: all; the fp32 ones only on a CPU without bf16 "
                                       "matrix instructions, where bf16 autocast is slower than fp32)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per variant (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default: %(default)s)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak memory runs")
    p.add_argument("--only", help=argparse.SUPPRESS)  # "model:variant": one variant, a few steps, print peak memory JSON
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.json"), help="results JSON; a .md table beside it")
    return p.parse_args(argv)


def batches(shape: dict, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, shape["vocab"], (shape["batch"], shape["T"] + 1), generator=g)
        mask = torch.ones(shape["batch"], shape["T"], dtype=torch.long)
        if shape["objective"] == "clm":
            out.append({"input_ids": ids[:, :-1], "attention_mask": mask, "labels": ids[:, 1:].clone()})
        else:
            ids = ids[:, :-1]
            chosen = torch.rand(ids.shape, generator=g) < 0.15
            labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
            out.append({"input_ids": torch.where(chosen, torch.full_like(ids, 4), ids), "attention_mask": mask, "labels": labels})
    return out


def minilm_step(shape: dict, variant: str, out_dir: str):
    arch, head = ("decoder", "lm") if shape["objective"] == "clm" else ("encoder", "mlm")
    config = from_preset("mini", arch=arch, head=head, vocab_size=shape["vocab"], max_seq_len=shape["T"], n_layer=shape["n_layer"],
                         n_head=shape["n_head"], n_embd=shape["n_embd"], mlp="gelu", dropout=0.0, attn_dropout=0.0, attn_impl="sdpa",
                         loss_impl="chunked" if arch == "decoder" else "logits")
    model = build_model(config)
    if "compiled" in variant:
        from kernels import compile_blocks

        compile_blocks(model, dynamic=False)
    settings = TrainArgs(out=out_dir, max_steps=10**6, optimizer="adamw", lr=1e-4, weight_decay=0.01, grad_clip=1.0,
                         dtype="bf16" if "bf16" in variant else "fp32", compile="compiled" in variant)
    objective = shape["objective"]
    trainer = Trainer(model, None, None, pretraining_loss(objective), pretraining_targets(objective), lambda m: {}, settings)
    return model, lambda batch: trainer.train_step(batch, 1e-4)


def transformers_step(shape: dict):
    import transformers

    transformers.logging.set_verbosity_error()
    if shape["objective"] == "clm":
        config = transformers.GPT2Config(n_positions=shape["T"], n_embd=shape["n_embd"], n_layer=shape["n_layer"], n_head=shape["n_head"],
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, vocab_size=shape["vocab"])
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.BertConfig(hidden_size=shape["n_embd"], num_hidden_layers=shape["n_layer"], num_attention_heads=shape["n_head"],
                                         intermediate_size=4 * shape["n_embd"], max_position_embeddings=shape["T"], hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, vocab_size=shape["vocab"])
        model = transformers.BertForMaskedLM(config)
    model.config._attn_implementation = "sdpa"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(batch):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return model, step


def build(shape: dict, variant: str, out_dir: str):
    return transformers_step(shape) if variant.startswith("transformers") else minilm_step(shape, variant, out_dir)


DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16"}


def matmul_peak(dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, the median of `repeats`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def model_flops(shape: dict, n_dense: int) -> float:
    tokens = shape["batch"] * shape["T"]
    predicted = tokens if shape["objective"] == "clm" else int(0.15 * tokens)
    L, C, T = shape["n_layer"], shape["n_embd"], shape["T"]
    return 6 * n_dense * tokens + 6 * C * shape["vocab"] * predicted + 12 * L * C * T * tokens


def memory_estimate(shape: dict, n_params: int, chunk: int | None) -> dict:
    """Bytes, fp32:
      16 per parameter: weights, gradients, Adam's two moments;
      activations kept for backward, 16 C per block and token (each block's two norm inputs and
        outputs, Q, K, V, the attention output, the FFN's 4C hidden before and after GELU:
        counted with torch.autograd.graph.saved_tensors_hooks) and 2 C for the final norm;
      the head's loss: with the full logits, 3 x predicted x V (the logits, the log-softmax kept
        for backward, their gradient); in chunks (loss_impl "chunked"), 2 x chunk x V (a chunk's
        logits and softmax, recomputed in backward) and 2 V C (a chunk's and the running dW)."""
    tokens = shape["batch"] * shape["T"]
    predicted = tokens if shape["objective"] == "clm" else int(0.15 * tokens)
    C, V = shape["n_embd"], shape["vocab"]
    states = 16 * n_params
    activations = 4 * (16 * C * shape["n_layer"] + 2 * C) * tokens
    head = 4 * (2 * min(chunk, predicted) * V + 2 * V * C) if chunk else 4 * 3 * predicted * V
    return {"parameters_and_optimizer": states, "activations": activations, "loss_head": head, "total": states + activations + head}


def peak_rss() -> int:
    """Bytes: this process's peak resident set. /proc's VmHWM starts afresh at exec, unlike
    getrusage's ru_maxrss, which a child inherits from the parent that forked it."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    """Bytes: this process's resident set now."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def only(spec: str, steps: int = 4):
    """One variant in this fresh process: peak resident growth over a few steps, as JSON."""
    name, variant = spec.split(":", 1)
    shape = SHAPES[name]
    data = batches(shape, steps)
    # every module the variant imports, imported first: a library's code is not the training step's memory.
    # Building any torch.optim.Optimizer (minilm's subclass them too) imports torch._dynamo: about 70 MB.
    import torch._dynamo  # noqa: F401

    if variant.startswith("transformers"):
        import transformers

        transformers.GPT2LMHeadModel, transformers.BertForMaskedLM  # noqa: B018 - their modules load on first access
    else:
        import kernels.cross_entropy  # noqa: F401

        if "compiled" in variant:
            import kernels.compile  # noqa: F401
    before = current_rss()
    with tempfile.TemporaryDirectory() as d:
        model, step = build(shape, variant, d)
        n_params = sum(p.numel() for p in model.parameters())
        for batch in data:
            step(batch)
    peak = peak_rss()
    chunk = 1024 if shape["objective"] == "clm" and not variant.startswith("transformers") else None  # LMHead's chunked loss
    print(json.dumps({"peak_growth_bytes": peak - before, "parameters": n_params, "estimate": memory_estimate(shape, n_params, chunk)}))


def main(argv=None):
    args = parse_args(argv)
    if args.only:
        return only(args.only)
    if args.variants:
        variants = args.variants.split(",")
    elif cpu_has_bf16():
        variants = VARIANTS
    else:
        variants = [v for v in VARIANTS if "bf16" not in v]
        print("this CPU has no bf16 matrix instructions (AVX-512 BF16 or AMX): the bf16 variants are left out "
              "(--variants runs them anyway)", flush=True)
    peaks = {"float32": matmul_peak(torch.float32)}
    if any("bf16" in v for v in variants):
        peaks["bfloat16"] = matmul_peak(torch.bfloat16)
    print("matmul peak: " + ", ".join(f"{DTYPE_NAMES[k]} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    rows = []
    for name in args.models.split(","):
        shape = SHAPES[name]
        data = batches(shape, args.warmup + args.repeats)
        with tempfile.TemporaryDirectory() as d:
            built = {v: build(shape, v, f"{d}/{i}") for i, v in enumerate(variants)}
            times = {v: [] for v in variants}
            first = {}  # the first step of each variant: compilation included for the compiled ones
            for i, batch in enumerate(data):
                for v, (_, step) in built.items():
                    start = time.perf_counter()
                    step(batch)
                    if i == 0:
                        first[v] = time.perf_counter() - start
                    if i >= args.warmup:
                        times[v].append(time.perf_counter() - start)
        reference = next((v for v in variants if v.startswith("transformers")), None)
        for v in variants:
            model = built[v][0]
            n_dense = sum(p.numel() for n, p in model.named_parameters() if ".h." in n or "blocks." in n or "encoder.layer." in n)
            t = statistics.median(times[v])
            tokens = shape["batch"] * shape["T"]
            peak = peaks["bfloat16" if "bf16" in v else "float32"]
            row = {"model": name, "variant": v, "ms_per_step": 1000 * t, "tokens_per_s": tokens / t, "first_step_s": first[v],
                   "mfu": model_flops(shape, n_dense) / t / peak, "parameters": sum(p.numel() for p in model.parameters())}
            if reference:
                row["speedup_vs_transformers_fp32"] = statistics.median(times[reference]) / t
            rows.append(row)
            print(f"{name}: {v:22s} {1000 * t:8.1f} ms/step {tokens / t:8.0f} tokens/s  MFU {row['mfu']:.0%}"
                  + (f"  x{row['speedup_vs_transformers_fp32']:.2f}" if reference else ""), flush=True)
        if not args.no_memory:
            for row in [r for r in rows if r["model"] == name]:
                for key, env in (("peak_memory_bytes", {}), ("peak_memory_bytes_mmap_64k", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
                    proc = subprocess.run([sys.executable, __file__, "--only", f"{name}:{row['variant']}"], capture_output=True, text=True,
                                          env={**os.environ, **env})
                    if proc.returncode != 0:
                        print(proc.stderr[-2000:], file=sys.stderr)
                        continue
                    mem = json.loads(proc.stdout.strip().splitlines()[-1])
                    row[key], row["memory_estimate"] = mem["peak_growth_bytes"], mem["estimate"]
                if "peak_memory_bytes" in row and "peak_memory_bytes_mmap_64k" in row:
                    print(f"{name}: {row['variant']:22s} peak memory {row['peak_memory_bytes'] / 2**20:7.0f} MiB, "
                          f"{row['peak_memory_bytes_mmap_64k'] / 2**20:.0f} MiB with a 64 KiB mmap threshold "
                          f"(estimate {row['memory_estimate']['total'] / 2**20:.0f} MiB)", flush=True)
    where = machine()
    result = {"machine": where, "matmul_peak_flops": peaks, "shapes": SHAPES, "repeats": args.repeats, "rows": rows}
    lines = [f"Training step, {where}; matmul peak " + ", ".join(f"{DTYPE_NAMES[k]} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()) + "; "
             f"medians of {args.repeats} steps.", "",
             "| model | variant | ms/step | tokens/s | MFU | vs transformers fp32 | first step, s (compilation) | peak memory: default / 64 KiB mmap threshold (estimate) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = (f"{r['peak_memory_bytes'] / 2**20:.0f} / {r['peak_memory_bytes_mmap_64k'] / 2**20:.0f} MiB "
               f"({r['memory_estimate']['total'] / 2**20:.0f} MiB)" if "peak_memory_bytes_mmap_64k" in r and "peak_memory_bytes" in r else "")
        lines.append(f"| {r['model']} | {r['variant']} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:.0f} | {r['mfu']:.0%} | "
                     f"x{r.get('speedup_vs_transformers_fp32', float('nan')):.2f} | {r['first_step_s']:.1f} | {mem} |")
    write_results(args.out, result, lines)

if __name__ == "__main__":
    main()
