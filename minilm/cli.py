"""Command-line pieces shared by train.py and finetune.py: model and training flags, device choice."""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from minilm.config import ATTN_IMPLS, MLPS, NORM_POSITIONS, NORMS, POSITIONS, PRESETS


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (a preset, then single fields overridden)")
    g.add_argument("--preset", default="mini", choices=list(PRESETS), help="model size (default: %(default)s)")
    g.add_argument("--n-layer", type=int, help="number of blocks")
    g.add_argument("--n-head", type=int, help="attention heads per block")
    g.add_argument("--n-embd", type=int, help="model width d_model")
    g.add_argument("--pos", choices=POSITIONS, help="position encoding")
    g.add_argument("--norm", choices=NORMS, help="normalisation layer")
    g.add_argument("--norm-position", choices=NORM_POSITIONS, help="norm before (pre) or after (post) each sublayer")
    g.add_argument("--mlp", choices=MLPS, help="feed-forward activation")
    g.add_argument("--attn-impl", choices=ATTN_IMPLS, help="attention implementation: readable math or fused SDPA")
    g.add_argument("--dropout", type=float, help="dropout on embeddings, residuals and attention weights (default: 0 to pretrain, 0.1 to fine-tune)")


def model_overrides(args) -> dict:
    keys = ("n_layer", "n_head", "n_embd", "pos", "norm", "norm_position", "mlp", "attn_impl")
    out = {k: getattr(args, k) for k in keys}
    if args.dropout is not None:
        out.update(dropout=args.dropout, attn_dropout=args.dropout)
    return out


def add_train_args(p: argparse.ArgumentParser, lr: float, batch_size: int, seq_len: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", help="output directory (model, metrics, checkpoint)")
    g.add_argument("--max-steps", type=int, help="number of optimizer steps")
    g.add_argument("--batch-size", type=int, default=batch_size, help="examples per step (default: %(default)s)")
    g.add_argument("--seq-len", type=int, default=seq_len, help="maximum tokens per example (default: %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate of AdamW (default: %s)" % (lr or "5e-4 from scratch, 2e-4 from a checkpoint"))
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay (default: %(default)s)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default: 6%% of max steps)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm to this (0: off; default: %(default)s)")
    g.add_argument("--eval-every", type=int, help="evaluate every N steps")
    g.add_argument("--save-every", type=int, default=500, help="write a resumable checkpoint every N steps (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed for weights and data order (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint (a fresh start if there is none)")
    g.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="compute precision; bf16 autocasts, weights stay fp32 (default: %(default)s)")
    g.add_argument("--compile", action="store_true", help="compile each block with torch.compile (the eager model if unavailable)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_positive(p: argparse.ArgumentParser, args, *names) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
