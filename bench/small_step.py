"""The per-step overhead of a small model: minilm's training step beside a plain PyTorch loop.

    python bench/small_step.py                       # tiny-shakespeare's nanoGPT shape: 4 x 4 x 128, T=64, batch 12
    python bench/small_step.py --repeats 300 --out /tmp/small_step.json

Both train the same GPT shape (pre-norm, GELU MLP, learned positions, tied embeddings, no dropout,
vocabulary 104) on the same random batches. minilm runs `Trainer.train_step` (split into
micro-batches, the loss, backward, its hand-written gradient clipping and AdamW); the reference is
the shortest loop PyTorch allows: one fused QKV projection, F.scaled_dot_product_attention,
torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW(fused=True). The two take turns step by step,
so drift in the machine's speed hits them alike; the numbers are medians after warm-up steps.
"""

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import atomic_write_json  # noqa: E402
from minilm.config import from_preset  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.training.pretraining import pretraining_loss, pretraining_targets  # noqa: E402
from minilm.training.trainer import TrainArgs, Trainer  # noqa: E402


class ReferenceBlock(nn.Module):
    def __init__(self, C: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(self.ln_1(x)).split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab: int, T: int, C: int, n_layer: int, n_head: int):
        super().__init__()
        self.token, self.position = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(ReferenceBlock(C, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        x = self.token(idx) + self.position(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.token.weight.T  # tied output embedding
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class RandomBatches:
    def __init__(self, vocab: int, batch_size: int, T: int):
        self.vocab, self.batch_size, self.T = vocab, batch_size, T

    def batch(self, step: int) -> dict:
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(0, self.vocab, (self.batch_size, self.T + 1), generator=g)
        return {"input_ids": ids[:, :-1], "attention_mask": torch.ones(self.batch_size, self.T, dtype=torch.long), "labels": ids[:, 1:]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=4, help="blocks (default: %(default)s)")
    p.add_argument("--n-head", type=int, default=4, help="attention heads (default: %(default)s)")
    p.add_argument("--n-embd", type=int, default=128, help="model width (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per row (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=12, help="rows per step (default: %(default)s)")
    p.add_argument("--vocab", type=int, default=104, help="vocabulary size (default: %(default)s, tiny-shakespeare's characters)")
    p.add_argument("--repeats", type=int, default=200, help="timed steps of each (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "small_step.json"), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    config = from_preset("mini", arch="decoder", head="lm", vocab_size=args.vocab, max_seq_len=args.seq_len, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, mlp="gelu", dropout=0.0, attn_dropout=0.0)
    data = RandomBatches(args.vocab, args.batch_size, args.seq_len)
    with tempfile.TemporaryDirectory() as out:
        settings = TrainArgs(out=out, max_steps=args.warmup + args.repeats, optimizer="adamw", lr=1e-3, weight_decay=0.1, grad_clip=1.0)
        trainer = Trainer(build_model(config), None, data, pretraining_loss("clm"), pretraining_targets("clm"), lambda m: {}, settings)

        reference = ReferenceGPT(args.vocab, args.seq_len, args.n_embd, args.n_layer, args.n_head)
        optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=0.1, fused=True)

        def reference_step(batch):
            loss = reference(batch["input_ids"], batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            optimizer.step()
            return loss.item()

        runs = {"minilm": lambda b: trainer.train_step(b, 1e-3), "reference": reference_step}
        times = {name: [] for name in runs}
        for step in range(args.warmup + args.repeats):
            batch = data.batch(step)
            for name, run in runs.items():
                start = time.perf_counter()
                run(batch)
                if step >= args.warmup:
                    times[name].append(time.perf_counter() - start)

    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "shape": {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "seq_len", "batch_size", "vocab")},
        "parameters": {"minilm": trainer.model.num_parameters(), "reference": sum(p.numel() for p in reference.parameters())},
        "median_ms_per_step": ms,
        "minilm_over_reference": ms["minilm"] / ms["reference"],
        "repeats": args.repeats,
    }
    atomic_write_json(Path(args.out), result)
    print(f"| | ms per step (median of {args.repeats}) |\n|---|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} |")
    print(f"minilm / reference: {result['minilm_over_reference']:.2f}  ({result['machine']}); written to {args.out}")


if __name__ == "__main__":
    main()
