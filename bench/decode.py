"""Decoding speed: minilm's `generate` beside `transformers` `generate()` on the same weights.

    python bench/decode.py                                   # two GPT-2 shapes, batch 1 and 8
    python bench/decode.py --shapes 6x6x384/8192 --new-tokens 64 --repeats 3 --out /tmp/decode.json

Two shapes by default: the tiny-shakespeare character model (4 layers x 4 heads x 128 channels,
vocabulary 104, 0.8M parameters), whose decoding time is mostly per-step overhead, and a GPT-2
6 x 6 x 384 with vocabulary 8192 (14M parameters, 55 MB in fp32), whose batch-1 steps are bound
by reading every weight from memory once per token. For each, a GPT-2 model with random weights
is built in `transformers`, saved, and loaded into minilm
(minilm/interop), so both sides hold the very same tensors. Each side continues the same random
prompts greedily for exactly --new-tokens tokens (no EOS), at batch 1 and batch 8 (left-padded
prompts of different lengths); the two take turns run by run and the numbers are medians. The
greedy outputs are compared token for token, so the two are known to do the same work. minilm
with --quantize int8 (dynamic int8 Linear layers) is timed beside them.
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

import minilm  # noqa: E402
from report import machine, write_results  # noqa: E402
from minilm.inference.generate import generate, left_pad  # noqa: E402
from minilm.inference.quantize import quantize  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="4x4x128/104,6x6x384/8192",
                   help="models as LAYERSxHEADSxCHANNELS/VOCAB, comma-separated (default: %(default)s)")
    p.add_argument("--prompt-len", type=int, default=32, help="longest prompt, tokens (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens generated per prompt (default: %(default)s)")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per side and batch size (default: %(default)s)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "decode.json"), help="results JSON; a .md table beside it")
    return p.parse_args(argv)


def prompts(batch: int, longest: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = [longest - (i * longest) // (2 * batch) for i in range(batch)]  # longest .. about half of it
    return left_pad([torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths], pad_id=0)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def build_pair(n_layer: int, n_head: int, n_embd: int, vocab: int, positions: int):
    """The same random GPT-2 weights in `transformers` and in minilm."""
    import transformers

    config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # wider weights than a fresh init, so that greedy outputs do not settle on one token
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = minilm.from_pretrained(d).eval()
    return hf, model


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    N = args.new_tokens
    hf_kwargs = dict(max_new_tokens=N, min_new_tokens=N, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    rows = []
    for shape in args.shapes.split(","):
        dims, vocab = shape.split("/")
        n_layer, n_head, n_embd = (int(x) for x in dims.split("x"))
        vocab = int(vocab)
        hf, model = build_pair(n_layer, n_head, n_embd, vocab, args.prompt_len + N)
        int8 = quantize(model)
        sides = {
            "transformers generate()": lambda ids, mask: hf.generate(input_ids=ids, attention_mask=mask, **hf_kwargs)[:, ids.shape[1]:],
            "minilm generate": lambda ids, mask: generate(model, ids, mask, N, greedy=True),
            "minilm generate, int8": lambda ids, mask: generate(int8, ids, mask, N, greedy=True),
        }
        with torch.no_grad():
            for B in [int(b) for b in args.batches.split(",")]:
                ids, mask = prompts(B, args.prompt_len, vocab)
                outputs = {name: fn(ids, mask) for name, fn in sides.items()}  # warm-up, and the outputs to compare
                same = torch.equal(outputs["transformers generate()"], outputs["minilm generate"])
                times = {name: [] for name in sides}
                for _ in range(args.repeats):
                    for name, fn in sides.items():
                        times[name].append(timed(lambda: fn(ids, mask))[0])
                ref = statistics.median(times["transformers generate()"])
                for name, ts in times.items():
                    t = statistics.median(ts)
                    rows.append({"shape": shape, "parameters": sum(p.numel() for p in model.parameters()), "batch": B, "side": name,
                                 "seconds": t, "tokens_per_s": B * N / t, "speedup": ref / t,
                                 "greedy_tokens_identical_to_transformers": same if name == "minilm generate" else None})
                    print(f"{shape} batch {B}: {name:26s} {B * N / t:9.1f} tokens/s  x{ref / t:.2f}", flush=True)
                if not same:
                    print(f"{shape} batch {B}: minilm's greedy tokens differ from transformers'", flush=True)
    where = machine(f"transformers {transformers.__version__}")
    result = {"machine": where, "config": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    lines = [f"Greedy decoding of GPT-2 shapes (layers x heads x channels / vocabulary), prompts up to {args.prompt_len} tokens, "
             f"{N} new tokens; {where}; medians of {args.repeats} runs.", "",
             "| shape | parameters | batch | side | tokens/s | vs transformers |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['parameters'] / 1e6:.1f}M | {r['batch']} | {r['side']} | {r['tokens_per_s']:.1f} | x{r['speedup']:.2f} |"
              for r in rows]
    write_results(args.out, result, lines)

if __name__ == "__main__":
    main()
