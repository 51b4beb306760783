"""Command-line pieces shared by train.py and finetune.py: model and training flags, device choice,
the checkpoint that --init names."""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys

import numpy as np
import torch

from minilm.training import distributed

from minilm.checkpoint import CONFIG_FILE, resolve_checkpoint
from minilm.config import LOSS_IMPLS, NORM_POSITIONS, PRESETS, ModelConfig
from minilm.model import registry
from minilm.optim import OPTIMIZERS, SCHEDULES
from minilm.tokenizer import Tokenizer
from minilm.training.trainer import TrainArgs, cpu_has_bf16


PLUGIN_HELP = ("a Python file or module to import first: the attention, position, norm and MLP variants it registers "
               "(minilm/model/registry.py) become choices of the flags and configs (repeatable)")


def add_plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE", help=PLUGIN_HELP)


def load_plugins(argv: list[str]) -> None:
    """Import every --plugin of the command line before the parser is built, so that the names
    they register are among its choices (and a checkpoint that names them loads)."""
    pre = argparse.ArgumentParser(add_help=False)
    add_plugin_arg(pre)
    known, _ = pre.parse_known_args(argv)
    for spec in known.plugin or []:
        try:
            registry.load_plugin(spec)
        except ValueError as e:
            sys.exit(f"error: {e}")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (a preset, then single fields overridden)")
    g.add_argument("--preset", default="mini", choices=list(PRESETS), help="model size (default: %(default)s)")
    g.add_argument("--n-layer", type=int, help="number of blocks")
    g.add_argument("--n-head", type=int, help="attention heads per block")
    g.add_argument("--n-embd", type=int, help="model width d_model")
    g.add_argument("--n-kv-head", type=int, help="key/value heads: fewer than --n-head for grouped-query attention, 1 for multi-query (default: as many as --n-head)")
    g.add_argument("--qk-norm", action="store_true", default=None, help="normalise each head's queries and keys before the attention scores (QK-norm)")
    g.add_argument("--attn-window", type=int, help="sliding-window attention: each token attends to the previous N positions only (default: all)")
    g.add_argument("--moe-experts", type=int, help="--mlp moe: experts per layer (default: 4)")
    g.add_argument("--moe-top-k", type=int, help="--mlp moe: experts each token goes to (default: 2)")
    g.add_argument("--moe-aux-weight", type=float, help="--mlp moe: weight of the load-balancing loss (default: 0.01)")
    g.add_argument("--share-layers", action="store_true", default=None, help="one block's weights for every layer, as ALBERT")
    g.add_argument("--parallel-block", action="store_true", default=None, help="attention and MLP side by side on one norm's output, as GPT-J and PaLM (pre-norm)")
    variant = " (or one a --plugin registers)"
    g.add_argument("--pos", choices=registry.names("position"), help="position encoding" + variant)
    g.add_argument("--norm", choices=registry.names("norm"), help="normalisation layer" + variant)
    g.add_argument("--norm-position", choices=NORM_POSITIONS, help="norm before (pre) or after (post) each sublayer")
    g.add_argument("--mlp", choices=registry.names("mlp"), help="feed-forward network" + variant)
    g.add_argument("--attn-impl", choices=registry.names("attention"), help="attention implementation: readable math or fused SDPA" + variant)
    g.add_argument("--loss-impl", choices=LOSS_IMPLS,
                   help="the LM loss (decoders): through the full logits, or in chunks of rows that never hold all of them (less memory)")
    g.add_argument("--dropout", type=float, help="dropout on embeddings, residuals and attention weights (default: 0; short pretraining and fine-tuning runs underfit, and "
                        "drawing the masks costs a third of a fine-tuning step on a CPU)")


SHAPE_FLAGS = ("n_layer", "n_head", "n_kv_head", "qk_norm", "parallel_block", "share_layers", "moe_experts", "n_embd", "pos", "norm", "norm_position", "mlp")  # flags that change the weights' shapes


def init_checkpoint(init: str, args, shape_flags_apply_to: str):
    """The checkpoint that --init names, as (directory, tokenizer, config): its architecture is kept,
    so a shape flag is an error (`shape_flags_apply_to` says where such flags do apply), and a
    --seq-len beyond the positions it learned is lowered to them, with a notice (rotary positions
    have no table, hence no such limit). Errors exit with a message naming --init."""
    path = resolve_checkpoint(init)
    try:
        tokenizer = Tokenizer.load(path)
        config = ModelConfig.load(path / CONFIG_FILE)  # a Hugging Face config.json too: importing minilm registered its reader
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: --init {init}: {e}")
    given = [k for k in SHAPE_FLAGS if getattr(args, k) is not None]
    if given:
        sys.exit(f"error: --{given[0].replace('_', '-')} changes the architecture; it applies to {shape_flags_apply_to} only")
    if config.position_limit is not None and args.seq_len > config.position_limit:
        print(f"notice: --seq-len {args.seq_len} lowered to {config.max_seq_len}, the positions --init {init} has ({config.pos})")
        args.seq_len = config.max_seq_len
    return path, tokenizer, config


def model_overrides(args) -> dict:
    keys = ("n_layer", "n_head", "n_kv_head", "qk_norm", "parallel_block", "share_layers", "attn_window", "moe_experts", "moe_top_k", "moe_aux_weight", "n_embd", "pos", "norm", "norm_position", "mlp", "attn_impl", "loss_impl")
    out = {k: getattr(args, k) for k in keys}
    if args.dropout is not None:
        out.update(dropout=args.dropout, attn_dropout=args.dropout)
    return out


def add_train_args(p: argparse.ArgumentParser, lr: float, batch_size: int, seq_len: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", help="output directory (model, metrics, checkpoint)")
    g.add_argument("--max-steps", type=int, help="number of optimizer steps")
    g.add_argument("--batch-size", type=int, default=batch_size, help="examples per forward pass, per process under torchrun (global batch: this x processes x --grad-accum; default: %(default)s)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches of --batch-size per optimizer step: the update of one batch of grad-accum x batch-size (default: %(default)s)")
    g.add_argument("--seq-len", type=int, default=seq_len, help="maximum tokens per example (default: %(default)s)")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adamw", help="hand-written optimizer (default: %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate (default: %s)" % (lr or "5e-4 from scratch, 2e-4 from a checkpoint"))
    g.add_argument("--momentum", type=float, default=0.9, help="momentum of --optimizer sgd (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="weight decay on weight matrices: decoupled for adamw, added to the gradient for sgd and adam (default: %(default)s)")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="cosine", help="learning-rate schedule after the warmup (default: %(default)s)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default: 6%% of max steps)")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="where linear and cosine decay end, as a fraction of --lr (default: %(default)s)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm to this (0: off; default: %(default)s)")
    g.add_argument("--eval-every", type=int, help="evaluate every N steps")
    g.add_argument("--save-every", type=int, default=500, help="write a resumable checkpoint every N steps (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed for weights and data order (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint (a fresh start if there is none)")
    g.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="compute precision: bf16 autocasts (CPU or CUDA), fp16 autocasts with dynamic loss scaling (CUDA); weights stay fp32. "
                        "auto: bf16 where the hardware has bf16 matrix instructions (a CPU with AVX-512 BF16 or AMX, a CUDA GPU that supports it), "
                        "else fp32 (default: %(default)s)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute each block's activations in backward: less memory, about a third more compute")
    g.add_argument("--compile", action="store_true", help="compile each block, and Adam(W)'s update, with torch.compile (the eager path if unavailable)")
    g.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard parameters, gradients and optimizer state across the ranks (FSDP2) instead of "
                        "replicating them (DDP, the default under torchrun)")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to <out>/tensorboard (needs the tensorboard package)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")


def check_train_flags(p: argparse.ArgumentParser, args) -> None:
    """Refuse shared training flags that cannot work, before any data is read."""
    check_positive(p, args, "max_steps", "batch_size", "grad_accum", "seq_len", "lr", "eval_every", "save_every")
    if args.dtype == "auto":
        args.dtype = auto_dtype(pick_device(args.device))
        print(f"precision: {args.dtype} (--dtype auto: {'bf16 matrix instructions found' if args.dtype == 'bf16' else 'no bf16 matrix instructions'})")
    if args.dtype == "fp16" and pick_device(args.device).type != "cuda":
        p.error("--dtype fp16 needs a CUDA device (its dynamic loss scaling is for GPU fp16); on a CPU use --dtype bf16")
    if args.dtype == "bf16" and pick_device(args.device).type == "cpu" and not cpu_has_bf16():
        print(EMULATED_BF16)
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        p.error("--tensorboard needs the tensorboard package: pip install tensorboard")
    if not 0 <= args.min_lr_ratio <= 1:
        p.error(f"--min-lr-ratio must lie in [0, 1], got {args.min_lr_ratio}")


def train_args(args, max_steps: int, **task) -> TrainArgs:
    """The loop's settings from the shared flags; `task` adds the script's own (metric, mode ...)."""
    return TrainArgs(
        out=args.out, max_steps=max_steps, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        momentum=args.momentum, layer_lr_decay=getattr(args, "layer_lr_decay", 1.0), schedule=args.schedule, min_lr_ratio=args.min_lr_ratio,
        warmup=args.warmup if args.warmup is not None else max(1, max_steps * 6 // 100),
        grad_clip=args.grad_clip, grad_accum=args.grad_accum, grad_checkpointing=args.grad_checkpointing,
        save_every=args.save_every, dtype=args.dtype, compile=args.compile, tensorboard=args.tensorboard, resume=args.resume,
        extra=vars(args), **task,
    )


EMULATED_BF16 = ("notice: this CPU has no bf16 matrix instructions (AVX-512 BF16 or AMX), so --dtype bf16 emulates "
                 "its products and runs slower than fp32 here; leave --dtype at fp32")


def auto_dtype(device: torch.device) -> str:
    """bf16 where its products run in hardware (CPU: AVX-512 BF16 or AMX; CUDA: compute capability
    that supports it), fp32 elsewhere: emulated bf16 is slower than fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def start(args):
    """This process's World and device: under torchrun, the process group joined (gloo on CPU, NCCL
    on CUDA, one GPU per local rank) and standard output silenced on every rank but 0, which alone
    reports. A plain run: a world of one on --device."""
    world, device = distributed.setup(pick_device(args.device), fsdp=args.fsdp)
    if not world.main:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process
    return world, device


def compile_if_asked(model, args) -> None:
    """--compile: each block through torch.compile (kernels/compile.py), in place."""
    if args.compile:
        from kernels import compile_blocks

        compile_blocks(model)


def global_batch(args, world) -> str:
    """The global batch, spelled out: examples per rank x ranks x accumulation steps."""
    n = args.batch_size * world.size * args.grad_accum
    if not world.distributed:
        return f"batch {n}" + (f" = {args.batch_size} x {args.grad_accum} accumulation steps" if args.grad_accum > 1 else "")
    return (f"global batch {n} = {args.batch_size} per rank x {world.size} ranks"
            f" x {args.grad_accum} accumulation step{'s' if args.grad_accum > 1 else ''}" + (" (FSDP)" if world.fsdp else " (DDP)"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def a_or_an(word: str) -> str:
    """The word with its indefinite article: "an encoder", "a decoder"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def check_positive(p: argparse.ArgumentParser, args, *names) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
