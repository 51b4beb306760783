"""The one training loop, shared by train.py and finetune.py.

    for step in start .. max_steps - 1:
        batch = data.batch(step)                     deterministic in (seed, step): resumable
        loss = sum over parts of (sum of token losses / number of targets)
        loss.backward(); clip ||g||; lr <- peak * schedule(step); optimizer.step()
        every eval_every steps: evaluate, log to <out>/metrics.jsonl, keep the best (early stopping)
        every save_every steps: <out>/checkpoint (model, optimizer, step, RNG), swapped in atomically

The loop knows nothing of tasks: a task hands it a `loss_fn(model, batch) -> {part: (sum, count)}`
and an `evaluate(model) -> {metric: value}`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from minilm.checkpoint import from_pretrained, load_state, resolve_checkpoint, save_checkpoint, save_pretrained
from minilm.optim import AdamW, clip_grad_norm, param_groups, set_lr, warmup_cosine


@dataclass
class TrainArgs:
    out: str
    max_steps: int
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    warmup: int = 100  # steps of linear warmup
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    grad_clip: float = 1.0
    eval_every: int = 200
    save_every: int = 500
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    metric: str = "val_loss"  # the evaluation metric that picks the best checkpoint
    mode: str = "min"  # "min" or "max" for that metric
    keep_best: bool = False  # end with the best evaluated weights instead of the last
    dtype: str = "fp32"  # "fp32" or "bf16" (autocast; the weights stay fp32)
    resume: bool = False
    extra: dict = field(default_factory=dict)  # recorded in the training state (script flags)


class TrainingDiverged(RuntimeError):
    pass


def autocast(dtype: str, device: torch.device):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_tokens(batch: dict) -> int:
    mask = batch.get("attention_mask")
    n = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
    if "decoder_attention_mask" in batch:
        n += int(batch["decoder_attention_mask"].sum())
    return n


class Trainer:
    def __init__(self, model, tokenizer, data, loss_fn, evaluate, args: TrainArgs, device="cpu"):
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.loss_fn, self.evaluate_fn, self.args = loss_fn, evaluate, args
        self.device = torch.device(device)
        self.out = Path(args.out)
        self.optimizer = AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=args.betas, eps=args.eps)
        self.step = 0
        self.best = None
        self.bad_evals = 0
        self.history = []

    # -- state --------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "args": {k: v for k, v in asdict(self.args).items()},
        }

    def save(self) -> None:
        save_checkpoint(self.out / "checkpoint", self.model, self.tokenizer, self._state())

    def try_resume(self) -> bool:
        ckpt = resolve_checkpoint(self.out / "checkpoint")
        if not (ckpt / "training_state.json").exists():
            tqdm.write(f"--resume: no checkpoint in {self.out / 'checkpoint'}; starting from step 0")
            return False
        restored = from_pretrained(ckpt)
        self.model.load_state_dict(restored.state_dict())
        state = load_state(ckpt)
        opt = state["optimizer"]
        opt["state"] = {int(k): v for k, v in opt["state"].items()}
        self.optimizer.load_state_dict(opt)
        torch.set_rng_state(state["rng_torch"])
        self.step, self.best, self.bad_evals = state["step"], state["best"], state["bad_evals"]
        self._truncate_metrics(self.step)
        tqdm.write(f"resumed from {ckpt} at step {self.step}")
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop log records written after the checkpoint we resume from."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))

    # -- the loop -------------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        self.history.append(record)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad(), autocast(self.args.dtype, self.device):
            metrics = self.evaluate_fn(self.model)
        self.model.train()
        return metrics

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.args.mode == "min" else value > self.best

    def fit(self) -> dict:
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if not (args.resume and self.try_resume()):
            (self.out / "metrics.jsonl").write_text("")
        self.model.to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(total=args.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        window_loss, window_n, tokens, t0 = 0.0, 0, 0, time.perf_counter()
        last_eval = {}
        stop_reason = None
        while self.step < args.max_steps:
            batch = {k: v.to(self.device) for k, v in self.data.batch(self.step).items()}
            lr = args.lr * warmup_cosine(self.step, args.warmup, args.max_steps, args.min_lr_ratio)
            set_lr(self.optimizer, lr)
            with autocast(args.dtype, self.device):
                parts = self.loss_fn(self.model, batch)
            loss = sum(total / max(count, 1) for total, count in parts.values())
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingDiverged(
                    f"step {self.step}: the loss is {float(loss)}; stopping. The last good checkpoint is "
                    f"{self.out / 'checkpoint'} (lower --lr, or use --dtype fp32)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(params, args.grad_clip)
            self.optimizer.step()
            self.step += 1
            window_loss += loss.item()
            window_n += 1
            tokens += count_tokens(batch)
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{window_loss / window_n:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / max(elapsed, 1e-9):,.0f}")

            if self.step % args.eval_every == 0 or self.step == args.max_steps:
                last_eval = self.evaluate()
                record = {"step": self.step, "train_loss": window_loss / max(window_n, 1), **last_eval}
                self._log(record)
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                window_loss, window_n = 0.0, 0
                value = last_eval.get(args.metric)
                if value is not None and math.isfinite(value):
                    if self._improved(value):
                        self.best, self.bad_evals = value, 0
                        if args.keep_best:
                            save_checkpoint(self.out / "best", self.model, self.tokenizer)
                    else:
                        self.bad_evals += 1
                        if args.patience and self.bad_evals >= args.patience:
                            stop_reason = f"early stopping: {args.metric} did not improve in {args.patience} evaluations"
            if self.step % args.save_every == 0 or self.step == args.max_steps or stop_reason:
                self.save()
            if stop_reason:
                tqdm.write(stop_reason)
                break
        bar.close()
        best = resolve_checkpoint(self.out / "best")
        if args.keep_best and (best / "model.safetensors").exists():
            self.model.load_state_dict(from_pretrained(best).state_dict())
        save_pretrained(self.out, self.model, self.tokenizer)
        self.model.eval()
        return {"step": self.step, "best": self.best, "last_eval": last_eval, "seconds": time.perf_counter() - t0}
