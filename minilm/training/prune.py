"""Pruning a fine-tuned model: structured (whole attention heads and feed-forward neurons, which
makes it smaller and faster) and unstructured (single weights, which makes it sparse, not faster).

    python -m minilm.training.prune --ckpt runs/teacher --out runs/pruned --heads 0.5 --ffn 0.5 --train train.tsv
    python -m minilm.training.prune --ckpt runs/teacher --out runs/sparse --sparsity 0.5 [--scope layer]
    python finetune.py --init runs/pruned --train train.tsv --dev dev.tsv --teacher runs/teacher   # recovery, distilled

Head importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): head h's output
is scaled by a gate xi_h = 1, and

    I_h = E_x | dL(x) / d xi_h |

over batches of the training file (L the task loss of the model's head). The scores are divided
by the L2 norm of their layer's, ranked across all layers, and the lowest removed; every block
keeps at least one head.

Neuron importance: I_i = E_x |a_i(x)| ||W_2[:, i]||, with a_i the activation of feed-forward neuron
i (its input to W_2): the size of what it writes into the residual stream; ranked within each
block (every block keeps the same fraction).

Removing head h deletes rows h hs .. (h + 1) hs - 1 of W^Q, W^K, W^V (and of their biases) and the
same columns of W^O; removing neuron i deletes row i of W_1 (and W_3 for SwiGLU) and column i of
W_2. The config records the sizes kept per block (`layer_heads`, `layer_ff`), so the pruned
checkpoint loads with `minilm.from_pretrained` and runs in every script.

Unstructured magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the fraction s of
the weights of smallest |w| in the blocks' Linear layers is set to 0, ranked over all of them
(`--scope global`) or within each layer (`--scope layer`). The file stays dense, and so do the
products: dense kernels do not get faster from zeros (the gain is in the compressed size, or on
hardware with sparse kernels). Gradual pruning during fine-tuning (`finetune.py --sparsity`)
raises s along the cubic schedule

    s_t = s_f + (s_0 - s_f) (1 - (t - t_0) / (t_1 - t_0))^3,   t_0 <= t <= t_1

and keeps the pruned weights at 0 through every optimizer step.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from tqdm import tqdm

from minilm.checkpoint import from_pretrained, resolve_checkpoint, save_pretrained
from minilm.inference.task_outputs import forward_task
from minilm.model.families import build_model
from minilm.tokenizer import Tokenizer
from minilm.training.finetuning import task_loss

HEAD_TASK = {"cls": "cls", "regression": "regression", "token": "ner"}


def blocks(model):
    stack = model.transformer if hasattr(model, "transformer") else None
    if stack is None:
        raise ValueError("structured pruning applies to an encoder or a decoder (one stack of blocks), not an encoder-decoder")
    return list(stack.blocks)


# -- importance --------------------------------------------------------------------------------------
def head_importance(model, batches, task: str, device="cpu") -> list[torch.Tensor]:
    """I_h = mean over batches of |dL/dxi_h| for every head of every block: a list of (nh,)."""
    loss_fn = task_loss(task)
    attns = [b.attn for b in blocks(model)]
    for a in attns:
        a.head_gate = torch.ones(a.n_head, device=device, requires_grad=True)
    scores = [torch.zeros(a.n_head) for a in attns]
    model.eval()  # no dropout: the gradient of the loss itself
    try:
        n = 0
        for batch in tqdm(batches, desc="head importance", unit="batch", leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            total, count = _loss(loss_fn, model, batch)
            grads = torch.autograd.grad(total / max(count, 1), [a.head_gate for a in attns])
            for s, g in zip(scores, grads):
                s += g.abs().cpu()
            n += 1
    finally:
        for a in attns:
            a.head_gate = None
    return [s / max(n, 1) for s in scores]


def _loss(loss_fn, model, batch):
    (total, count), = loss_fn(model, batch).values()
    return total, int(count)


@torch.no_grad()
def neuron_importance(model, batches, device="cpu") -> list[torch.Tensor]:
    """I_i = E_x |a_i(x)| ||W_2[:, i]|| for the feed-forward neurons of every block: a list of (F,)."""
    mlps = [b.mlp for b in blocks(model)]
    sums = [torch.zeros(m.fc2.in_features) for m in mlps]
    counts = [0] * len(mlps)
    hooks = []
    for k, m in enumerate(mlps):
        def hook(module, inputs, k=k):
            a = inputs[0].detach().float().flatten(0, -2)  # (B T, F)
            sums[k] += a.abs().sum(0).cpu()
            counts[k] += a.shape[0]
        hooks.append(m.fc2.register_forward_pre_hook(hook))
    model.eval()
    try:
        for batch in tqdm(batches, desc="neuron importance", unit="batch", leave=False):
            forward_task(model, {k: v.to(device) for k, v in batch.items()})
    finally:
        for h in hooks:
            h.remove()
    return [s / max(c, 1) * m.fc2.weight.detach().float().norm(dim=0).cpu() for s, c, m in zip(sums, counts, mlps)]


def keep_heads(scores: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """The heads kept in each block when `fraction` of all heads go: the lowest of the scores,
    each layer's divided by its L2 norm (Michel et al.), ranked together; one head at least per block."""
    normed = [s / (s.norm() + 1e-12) for s in scores]
    ranked = sorted(((float(v), layer, h) for layer, s in enumerate(normed) for h, v in enumerate(s)))
    kept = [set(range(len(s))) for s in scores]
    to_remove = int(round(fraction * sum(len(s) for s in scores)))
    for _, layer, h in ranked:
        if to_remove == 0:
            break
        if len(kept[layer]) > 1:
            kept[layer].discard(h)
            to_remove -= 1
    return [sorted(k) for k in kept]


def keep_neurons(scores: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """The neurons kept in each block: the (1 - fraction) of highest importance, at least one."""
    out = []
    for s in scores:
        n = max(1, len(s) - int(round(fraction * len(s))))
        out.append(sorted(torch.topk(s, n).indices.tolist()))
    return out


# -- shrinking ---------------------------------------------------------------------------------------
def shrink(model, heads: list[list[int]] | None = None, neurons: list[list[int]] | None = None):
    """A new model with only the kept heads and neurons of each block (the weights sliced)."""
    config = model.config
    hs = config.head_size
    layer_heads = [len(h) for h in heads] if heads is not None else config.layer_heads
    layer_ff = [len(n) for n in neurons] if neurons is not None else config.layer_ff
    small = build_model(config.replace(layer_heads=layer_heads, layer_ff=layer_ff))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for layer, block in enumerate(blocks(model)):
        p = f"transformer.blocks.{layer}."
        if heads is not None:
            rows = torch.cat([torch.arange(h * hs, (h + 1) * hs) for h in heads[layer]])
            for name in ("q_proj", "k_proj", "v_proj"):
                state[p + f"attn.{name}.weight"] = state[p + f"attn.{name}.weight"][rows]
                if p + f"attn.{name}.bias" in state:
                    state[p + f"attn.{name}.bias"] = state[p + f"attn.{name}.bias"][rows]
            state[p + "attn.o_proj.weight"] = state[p + "attn.o_proj.weight"][:, rows]
        if neurons is not None:
            idx = torch.as_tensor(neurons[layer])
            for name in ("fc1", "fc3"):
                if p + f"mlp.{name}.weight" in state:
                    state[p + f"mlp.{name}.weight"] = state[p + f"mlp.{name}.weight"][idx]
                    if p + f"mlp.{name}.bias" in state:
                        state[p + f"mlp.{name}.bias"] = state[p + f"mlp.{name}.bias"][idx]
            state[p + "mlp.fc2.weight"] = state[p + "mlp.fc2.weight"][:, idx]
    small.load_state_dict(state, strict=True)
    return small.eval()


# -- unstructured ------------------------------------------------------------------------------------
def prunable(model) -> dict[str, nn.Parameter]:
    """The weight matrices that magnitude pruning thins: every Linear layer inside the blocks."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".blocks." in f".{name}"}


@torch.no_grad()
def magnitude_masks(model, sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Masks (1 keep, 0 prune) zeroing the fraction `sparsity` of smallest |w|, over all the
    blocks' Linear weights at once (global) or within each (layer)."""
    weights = prunable(model)
    if scope == "layer":
        return {n: _mask_of(w.abs(), sparsity) for n, w in weights.items()}
    scores = torch.cat([w.abs().flatten() for w in weights.values()])
    k = int(round(sparsity * scores.numel()))
    threshold = torch.kthvalue(scores.float(), k).values if k > 0 else torch.tensor(-1.0)
    return {n: (w.abs() > threshold).to(w.dtype) for n, w in weights.items()}


def _mask_of(scores, sparsity):
    k = int(round(sparsity * scores.numel()))
    if k == 0:
        return torch.ones_like(scores)
    threshold = torch.kthvalue(scores.flatten().float(), k).values
    return (scores > threshold).to(scores.dtype)


@torch.no_grad()
def apply_masks(model, masks: dict[str, torch.Tensor]) -> None:
    weights = prunable(model)
    for name, mask in masks.items():
        weights[name].mul_(mask)


def sparsity_report(model) -> dict[str, float]:
    """The fraction of zero weights in each prunable layer, and over all of them ("all")."""
    weights = prunable(model)
    report = {n: float((w == 0).float().mean()) for n, w in weights.items()}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    report["all"] = zeros / max(1, sum(w.numel() for w in weights.values()))
    return report


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """s_t = s_f + (s_0 - s_f) (1 - (t - t_0) / (t_1 - t_0))^3, held at s_0 before t_0 and s_f after t_1."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1 - (step - begin) / (end - begin)) ** 3


class GradualPruner:
    """Zhu & Gupta's gradual magnitude pruning inside a training loop: call `after_step(t)` after
    each optimizer step; every `every` steps between `begin` and `end` the masks are recomputed at
    the schedule's sparsity, and after every step the pruned weights are set to 0 again."""

    def __init__(self, model, final: float, begin: int, end: int, every: int = 10, scope: str = "global"):
        self.model, self.final, self.begin, self.end, self.every, self.scope = model, final, begin, max(end, begin + 1), max(1, every), scope
        self.masks = None

    def after_step(self, step: int) -> None:
        due = step >= self.begin and ((step - self.begin) % self.every == 0 or step == self.end)
        if due or (self.masks is None and step > self.begin):  # (a resumed run has no masks yet)
            s = cubic_sparsity(step, self.final, self.begin, self.end)
            if s > 0:
                self.masks = magnitude_masks(self.model, s, self.scope)
        if self.masks is not None:
            apply_masks(self.model, self.masks)


# -- the command ---------------------------------------------------------------------------------------
def importance_batches(model, tokenizer, args):
    """Batches of the training file, labelled as the model's head expects, for head importance."""
    from minilm.data.tagging import TaggingData, read_conll, tag_ids
    from minilm.data.tasks import ClassificationData, label_ids, read_examples

    head = model.config.head
    labels = list(model.config.labels)
    if head == "token":
        sentences = read_conll(args.train, args.tag_col)
        data = TaggingData(sentences, tokenizer, tag_ids(sentences, labels), args.seq_len, args.batch_size)
    else:
        examples = read_examples(args.train, args.text_col, args.text_pair_col, args.label_col)
        y = label_ids(examples, labels) if head == "cls" else [float(e.label) for e in examples]
        data = ClassificationData(examples, tokenizer, y, args.seq_len, args.batch_size, pair_encoding=model.config.pair_encoding,
                                  prompt=model.config.prompt)
    batches = [batch for _, batch in data.by_length()]
    step = max(1, len(batches) // args.batches)
    return batches[::step][: args.batches]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minilm.training.prune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the fine-tuned checkpoint to prune (a directory or a shipped name)")
    p.add_argument("--out", required=True, help="where the pruned checkpoint goes")
    p.add_argument("--heads", type=float, default=0.0, metavar="FRACTION", help="structured: the fraction of all attention heads to remove (default: 0)")
    p.add_argument("--ffn", type=float, default=0.0, metavar="FRACTION", help="structured: the fraction of each block's feed-forward neurons to remove (default: 0)")
    p.add_argument("--sparsity", type=float, default=0.0, metavar="FRACTION",
                   help="unstructured: the fraction of the blocks' Linear weights set to 0, by magnitude (default: 0)")
    p.add_argument("--scope", choices=["global", "layer"], default="global", help="--sparsity ranks weights over all layers or within each (default: %(default)s)")
    p.add_argument("--train", help="--heads: the labelled file whose loss gradients score the heads (the training file of the checkpoint)")
    p.add_argument("--text-col", default="text", help="column of the text (default: %(default)s)")
    p.add_argument("--text-pair-col", help="column of the second text of a pair (none by default)")
    p.add_argument("--label-col", default="label", help="column of the label or value (default: %(default)s)")
    p.add_argument("--tag-col", default="upos", choices=["upos", "xpos"], help="a tagger on CoNLL-U files: the tag column (default: %(default)s)")
    p.add_argument("--batches", type=int, default=32, help="batches of --train read for importance (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per batch (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=128, help="most tokens per example (default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("heads", "ffn", "sparsity"):
        value = getattr(args, name)
        if not 0.0 <= value < 1.0:
            p.error(f"--{name} must lie in [0, 1), got {value}")
    if not (args.heads or args.ffn or args.sparsity):
        p.error("nothing to prune: give --heads, --ffn (structured) or --sparsity (unstructured)")
    if args.sparsity and (args.heads or args.ffn):
        p.error("--sparsity (unstructured) and --heads / --ffn (structured) are separate runs: prune one way, then the other")
    if (args.heads or args.ffn) and not args.train:
        p.error("--heads and --ffn score heads and neurons on labelled examples: give --train FILE (the checkpoint's training file)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        ckpt = resolve_checkpoint(args.ckpt)
        model = from_pretrained(ckpt)
        tokenizer = Tokenizer.load(ckpt)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: --ckpt {e}")
    n_before = sum(p.numel() for p in model.parameters())
    if args.sparsity:
        masks = magnitude_masks(model, args.sparsity, args.scope)
        apply_masks(model, masks)
        report = sparsity_report(model)
        save_pretrained(args.out, model, tokenizer)
        for name, s in report.items():
            print(f"{name}: {s:.1%} zeros")
        print(f"saved {args.out}: {report['all']:.1%} of the blocks' Linear weights are 0 (the file stays dense)")
        return report
    if model.config.head not in HEAD_TASK:
        sys.exit(f"error: --ckpt {args.ckpt}: a {model.config.head!r} head; structured pruning scores heads by the loss of a fine-tuned "
                 f"cls, regression or token head (fine-tune first)")
    try:
        blocks(model)
        args.seq_len = min(args.seq_len, model.config.max_seq_len)
        batches = importance_batches(model, tokenizer, args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    heads = neurons = None
    if args.heads:
        scores = head_importance(model, batches, HEAD_TASK[model.config.head])
        heads = keep_heads(scores, args.heads)
    if args.ffn:
        neurons = keep_neurons(neuron_importance(model, batches), args.ffn)
    small = shrink(model, heads, neurons)
    save_pretrained(args.out, small, tokenizer)
    n_after = sum(p.numel() for p in small.parameters())
    print(f"heads per block: {small.config.layer_heads or [model.config.n_head] * model.config.n_layer}")
    print(f"feed-forward neurons per block: {small.config.layer_ff or 'as before'}")
    print(f"saved {args.out}: {n_after:,} parameters, {n_after / n_before:.1%} of {n_before:,}")
    return small


if __name__ == "__main__":
    main()
