"""The one training loop, shared by train.py and finetune.py.

    for step in start .. max_steps - 1:
        batch = data.batch(step)                  deterministic in (seed, step): the data position is the step
        split it into k micro-batches; N_p = number of targets of part p in the whole batch
        for each micro-batch j:  backward( sum_p  (sum of token losses of p in j) / N_p )
        clip ||g||; lr <- peak * schedule(step); optimizer.step()
        every eval_every steps: evaluate, log to <out>/metrics.jsonl, keep the best (early stopping)
        every save_every steps: <out>/checkpoint (model, optimizer, step, RNG), swapped in atomically

Dividing by the targets of the whole batch (not by those of each micro-batch) makes k micro-batches
of B examples give the update of one batch of kB, whatever the padding: a mean of per-micro-batch
means would weigh a token of a short micro-batch more than one of a long one.

The loop knows nothing of tasks: a task hands it a `loss_fn(model, batch) -> {part: (sum, count)}`,
a `targets(batch) -> {part: count}` and an `evaluate(model) -> {metric: value}`.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm import tqdm

from minilm.training import distributed

from minilm.checkpoint import load_into, load_state, resolve_checkpoint, save_checkpoint, save_pretrained
from minilm.model import moe
from minilm.model.blocks import Transformer
from minilm.optim import DynamicLossScaler, build_optimizer, clip_grad_norm, lr_at, set_lr
from minilm.rng import get_rng_state, set_rng_state
from minilm.training.distributed import World


@dataclass
class TrainArgs:
    out: str
    max_steps: int
    optimizer: str = "adamw"  # "sgd", "adam" or "adamw"
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    momentum: float = 0.9  # SGD only
    layer_lr_decay: float = 1.0  # block l of L learns at lr x decay^(L + 1 - l) (minilm/optim: param_groups)
    schedule: str = "cosine"  # "constant", "linear", "cosine" or "inverse_sqrt"
    warmup: int = 100  # steps of linear warmup
    min_lr_ratio: float = 0.1  # the floor of linear and cosine decay, as a fraction of lr
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per step
    grad_checkpointing: bool = False  # recompute activations in backward instead of storing them
    eval_every: int = 200
    save_every: int = 500
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    metric: str = "val_loss"  # the evaluation metric that picks the best checkpoint
    mode: str = "min"  # "min" or "max" for that metric
    keep_best: bool = False  # end with the best evaluated weights instead of the last
    dtype: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + dynamic loss scaling; fast on CUDA only)
    compile: bool = False  # the optimizer's update compiled (kernels/adam.py); the scripts' --compile also compiles the blocks
    tensorboard: bool = False  # also write TensorBoard events to <out>/tensorboard
    resume: bool = False
    extra: dict = field(default_factory=dict)  # recorded in the training state (script flags)


class TrainingStopped(RuntimeError):
    """The run stopped before max_steps; `code` is the exit status the scripts end with, and the
    message says what is left on disk."""

    code = 1


class TrainingDiverged(TrainingStopped):
    pass


class CheckpointNotWritten(TrainingStopped):
    """A checkpoint could not be written (disk full, the folder read-only): the run stops, since
    training on with nowhere to keep its progress would lose it; the previous checkpoint is intact."""


class StoppedBySignal(TrainingStopped):
    """SIGTERM (a scheduler's or `kill`'s polite stop) ended the run after a checkpoint of the
    step it was in; the exit status is 128 + 15, as for a process the signal ended."""

    code = 128 + 15


def autocast(dtype: str, device: torch.device):
    """Mixed precision: matmuls in bf16/fp16, the weights (and the optimizer) stay fp32."""
    if dtype in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
    return contextlib.nullcontext()


def cpu_has_bf16() -> bool:
    """This CPU multiplies bf16 matrices in hardware: AVX-512 BF16 or AMX on x86 (AVX-512 alone
    is not enough), as oneDNN reports it elsewhere. Without them, bf16 autocast converts and
    emulates each product, slower than fp32 (a 384 x 1536 Linear layer 10x slower on an AVX2-only
    CPU). True where torch cannot tell."""
    cpu = getattr(torch, "cpu", None)
    if hasattr(cpu, "_is_avx512_bf16_supported") and hasattr(cpu, "_is_amx_tile_supported") and platform.machine() in ("x86_64", "AMD64"):
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return probe is None or not torch.backends.mkldnn.is_available() or bool(probe())


def count_tokens(batch: dict) -> int:
    mask = batch.get("attention_mask")
    n = int(mask.sum()) if mask is not None and mask.dim() == 2 else batch["input_ids"].numel()
    for second in ("decoder_attention_mask", "pair_attention_mask"):  # an encoder-decoder's targets, a bi-encoder's second texts
        if second in batch:
            n += int(batch[second].sum())
    return n


def _trim(batch: dict, mask_key: str, keys: tuple) -> dict:
    """Drop trailing columns that are padding in every row of `batch[mask_key]`."""
    mask = batch.get(mask_key)
    if mask is None or mask.dim() != 2 or not mask.any():
        return batch
    length = int(mask.any(0).nonzero().max()) + 1
    return {k: (v[:, :length] if k in keys and v.dim() == 2 else v) for k, v in batch.items()}


def split_batch(batch: dict, k: int) -> list[dict]:
    """k micro-batches of (about) B / k rows each, every one cut to its own longest row."""
    rows = len(next(iter(batch.values())))
    if k == 1:
        return [batch]
    if rows < k:
        raise ValueError(f"a batch of {rows} rows cannot be split into {k} micro-batches (--grad-accum)")
    chunks = [dict(zip(batch, parts)) for parts in zip(*(v.tensor_split(k) for v in batch.values()))]
    seq2seq = "decoder_input_ids" in batch
    enc_keys = ("input_ids", "attention_mask", "segment_ids") + (() if seq2seq else ("labels",))
    dec_keys = ("decoder_input_ids", "decoder_attention_mask", "labels")
    chunks = [_trim(c, "attention_mask", enc_keys) for c in chunks]
    if "pair_input_ids" in batch:  # a bi-encoder's second texts, padded on their own
        chunks = [_trim(c, "pair_attention_mask", ("pair_input_ids", "pair_attention_mask")) for c in chunks]
    return [_trim(c, "decoder_attention_mask", dec_keys) for c in chunks] if seq2seq else chunks


def set_grad_checkpointing(model, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, Transformer):
            module.grad_checkpointing = on


class Trainer:
    """The loop. Under torchrun (`world`: minilm/training/distributed.py) every rank runs it on its own rows
    of each global batch; rank 0 alone logs and writes files."""

    def __init__(self, model, tokenizer, data, loss_fn, targets, evaluate, args: TrainArgs, device="cpu", world: World = World(),
                 after_step=None):
        """`after_step(step)`, when given, runs after each optimizer step (gradual pruning keeps its zeros with it)."""
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.after_step = after_step
        self.loss_fn, self.targets, self.evaluate_fn, self.args = loss_fn, targets, evaluate, args
        self.device = torch.device(device)
        self.world = world
        self.out = Path(args.out)
        model.to(self.device)
        self.net = distributed.wrap(model, world)  # net(fn, ...) = fn(model, ...) inside DDP or FSDP
        foreach = "compiled" if args.compile and not world.fsdp else True  # compiled: Adam(W)'s update as one loop per tensor
        self.optimizer = build_optimizer(args.optimizer, model, args.lr, args.weight_decay, args.betas, args.eps, args.momentum, foreach,
                                         args.layer_lr_decay)
        self.scaler = DynamicLossScaler() if args.dtype == "fp16" else None
        set_grad_checkpointing(model, args.grad_checkpointing)
        self.step = 0
        self.best = None
        self.best_step = None  # the step whose weights scored self.best
        self.bad_evals = 0
        self.history = []
        self.writer = None

    # -- state --------------------------------------------------------------------------------------
    def _state(self) -> dict:
        """The training state, with a sharded optimizer's tensors gathered (every rank calls this)."""
        return {
            "step": self.step,
            "optimizer": distributed.full_optimizer_state(self.optimizer) if self.world.fsdp else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": get_rng_state(),
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "args": {k: v for k, v in asdict(self.args).items()},
        }

    def full_tensors(self) -> dict | None:
        """The model's full state dict when its parameters are shards (every rank must call it), else None."""
        return distributed.full_model_state(self.model) if self.world.fsdp else None

    def save(self) -> None:
        """The checkpoint of this step, or CheckpointNotWritten naming the reason and the last good one."""
        state = self._state()
        try:
            self._ensure_out()
            self._save_checkpoint(self.out / "checkpoint", state)
        except (OSError, SafetensorError) as e:  # safetensors reports the OSError of its writes as its own error
            raise CheckpointNotWritten(self._not_written(f"the checkpoint of step {self.step}", e)) from None

    def _ensure_out(self) -> None:
        """The output folder, made again (with a notice) if it was removed while the run went on."""
        if self.world.main and not self.out.is_dir():
            tqdm.write(f"notice: {self.out} was removed during the run; making it again for the next checkpoint")
            self.out.mkdir(parents=True, exist_ok=True)

    def _not_written(self, what: str, e: Exception) -> str:
        ckpt = resolve_checkpoint(self.out / "checkpoint")
        try:
            last = load_state(ckpt)["step"] if (ckpt / "training_state.json").is_file() else None
        except (OSError, ValueError):
            last = None
        kept = (f"the last good checkpoint, step {last}, is intact in {ckpt}: make room or fix the folder, then rerun with --resume"
                if last is not None else "no earlier checkpoint was written")
        reason = getattr(e, "strerror", None) or re.sub(r".*I/O error: (.*?) \(os error \d+\).*", r"\1", str(e))
        return f"{self.out}: could not write {what} ({reason}); {kept}"

    def _save_checkpoint(self, directory, state: dict | None = None) -> None:
        """Every rank gathers (with FSDP); rank 0 writes."""
        tensors = self.full_tensors()
        if self.world.main:
            save_checkpoint(directory, self.model, self.tokenizer, state, tensors)

    def load(self, path) -> None:
        """Load a checkpoint's weights into the model, sharded or not (every rank reads the same file)."""
        if self.world.fsdp:
            load_into(self.model, path, load=lambda state, strict: distributed.load_full_model_state(self.model, state, strict))
        else:
            load_into(self.model, path)

    def call(self, fn):
        """fn(model) through the wrapper, which a sharded model needs for any forward pass (evaluation too)."""
        return self.net(fn) if self.world.fsdp else fn(self.model)

    def inference(self, fn):
        """fn(model) in eval mode, without gradients, in the precision training ran in (--dtype): how
        the evaluations during training and the final dev and test scores are computed."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.args.dtype, self.device):
                return self.call(fn)
        finally:
            self.model.train(training)

    def try_resume(self) -> bool:
        ckpt = resolve_checkpoint(self.out / "checkpoint")
        if not (ckpt / "training_state.json").exists():
            tqdm.write(f"--resume: no checkpoint in {self.out / 'checkpoint'}; starting from step 0")
            return False
        self.load(ckpt)
        state = load_state(ckpt)
        opt = state["optimizer"]
        opt["state"] = {int(k): v for k, v in opt["state"].items()}
        if self.world.fsdp:
            opt = distributed.shard_optimizer_state(self.optimizer, opt)
        foreach = [group["foreach"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(opt)
        for group, mode in zip(self.optimizer.param_groups, foreach):  # this run's path, not the one the checkpoint was saved with
            group["foreach"] = mode
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.best, self.bad_evals = state["step"], state["best"], state["bad_evals"]
        self.best_step = state.get("best_step")  # absent from checkpoints written before it was kept
        if self.world.main:
            self._truncate_metrics(self.step)
            tqdm.write(f"resumed from {ckpt} at step {self.step}")
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop log records written after the checkpoint we resume from."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))

    # -- logging --------------------------------------------------------------------------------------
    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        try:
            self._ensure_out()
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise CheckpointNotWritten(self._not_written(f"the metrics of step {record['step']}", e)) from None
        if self.writer:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval/{key}", value, record["step"])

    def evaluate(self) -> dict:
        """Rank 0 evaluates (every rank, when the model is sharded: each forward needs them all)
        and every rank gets rank 0's numbers, so all take the same early-stopping decisions."""
        metrics = None
        if self.world.evaluates:
            metrics = self.inference(self.evaluate_fn)
        return distributed.broadcast_json(metrics, self.world)

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.args.mode == "min" else value > self.best

    # -- one optimizer step ---------------------------------------------------------------------------
    def train_step(self, batch: dict, lr: float) -> float:
        """Accumulate the gradient of the whole batch over its micro-batches, then update.
        Returns the batch's loss: sum over parts of (summed loss / number of targets).

        Under torchrun `batch` is the global batch; this rank trains on its rows, its loss
        multiplied by the number of ranks, which DDP's mean of the gradients divides again."""
        totals = {part: max(int(n), 1) for part, n in self.targets(batch).items()}  # targets of the whole batch
        micro = split_batch(distributed.rows_of(batch, self.world), self.args.grad_accum)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for j, mb in enumerate(micro):
            with distributed.gradient_sync(self.net, self.world, sync=j == len(micro) - 1):
                with autocast(self.args.dtype, self.device):
                    parts = self.net(self.loss_fn, mb)
                loss = sum(s / totals[part] for part, (s, _) in parts.items())
                balance = moe.aux_loss(self.model)  # mixture-of-experts layers: their load-balancing loss
                if balance is not None:
                    loss = loss + balance / len(micro)
                total_loss += loss.item()
                loss = loss * self.world.size
                (self.scaler.scaled(loss) if self.scaler else loss).backward()
        total_loss = distributed.all_sum(total_loss, self.world)
        if not math.isfinite(total_loss):
            raise TrainingDiverged(
                f"step {self.step}: the loss is {total_loss}; stopping. The last good checkpoint is "
                f"{self.out / 'checkpoint'} (lower --lr, or use --dtype fp32)"
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler and not self.scaler.unscale(params):
            return total_loss  # fp16 overflow: skip this update, the scale was halved
        clip_grad_norm(params, self.args.grad_clip)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        return total_loss

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict:
        args = self.args
        main = self.world.main
        self.out.mkdir(parents=True, exist_ok=True)
        if not (args.resume and self.try_resume()) and main:
            (self.out / "metrics.jsonl").write_text("")
        if args.tensorboard and main:
            self._open_tensorboard()
        distributed.decorrelate_rng(self.world, self.step)
        self.model.train()  # on self.device since __init__
        bar = tqdm(total=args.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True, disable=not main)
        window_loss, window_n, tokens, t0 = 0.0, 0, 0, time.perf_counter()
        last_eval = {}
        stop_reason = None
        signalled = []  # SIGTERM: finish the step, save, stop (one process only: ranks would stop at different steps)
        previous = None
        if self.world.size == 1 and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: signalled.append(signum))
        try:
            while self.step < args.max_steps:
                batch = {k: v.to(self.device) for k, v in self.data.batch(self.step).items()}
                lr = lr_at(args.schedule, self.step, args.lr, args.warmup, args.max_steps, args.min_lr_ratio)
                loss = self.train_step(batch, lr)
                self.step += 1
                if self.after_step is not None:
                    self.after_step(self.step)
                window_loss += loss
                window_n += 1
                tokens += count_tokens(batch)
                tok_s = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{window_loss / window_n:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
                if self.writer:
                    self.writer.add_scalar("train/loss", loss, self.step)
                    self.writer.add_scalar("train/lr", lr, self.step)
                    self.writer.add_scalar("train/tokens_per_s", tok_s, self.step)

                if self.step % args.eval_every == 0 or self.step == args.max_steps:
                    last_eval = self.evaluate()
                    record = {"step": self.step, "train_loss": window_loss / max(window_n, 1), "lr": lr, **last_eval,
                              **moe.expert_load(self.model)}  # tokens per expert of the last forward (MoE models)
                    if main:
                        self._log(record)
                        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                    window_loss, window_n = 0.0, 0
                    stop_reason = self._track_best(last_eval.get(args.metric))
                if self.step % args.save_every == 0 or self.step == args.max_steps or stop_reason or signalled:
                    self.save()
                if signalled and self.step < args.max_steps:
                    raise StoppedBySignal(f"stopped by SIGTERM at step {self.step}: its checkpoint is in "
                                          f"{self.out / 'checkpoint'}; rerun with --resume to continue")
                if stop_reason:
                    if main:
                        tqdm.write(stop_reason)
                    break
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            bar.close()
            if self.writer:
                self.writer.close()
        distributed.barrier(self.world)  # rank 0 has written every file the others may read
        best = resolve_checkpoint(self.out / "best")
        weights_step = self.step  # the step whose weights the model ends with
        if args.keep_best and (best / "config.json").exists():
            self.load(best)
            weights_step = self.best_step
        tensors = self.full_tensors()
        if main:
            save_pretrained(self.out, self.model, self.tokenizer, tensors)
        self.model.eval()
        return {"step": self.step, "best": self.best, "weights_step": weights_step, "last_eval": last_eval,
                "seconds": time.perf_counter() - t0}

    def _track_best(self, value) -> str | None:
        """Keep the best checkpoint; return a reason to stop once patience runs out."""
        args = self.args
        if value is None or not math.isfinite(value):
            return None
        if self._improved(value):
            self.best, self.best_step, self.bad_evals = value, self.step, 0
            if args.keep_best:
                self._save_checkpoint(self.out / "best")
            return None
        self.bad_evals += 1
        if args.patience and self.bad_evals >= args.patience:
            return f"early stopping: {args.metric} did not improve in {args.patience} evaluations"
        return None
