"""Hand-written optimizers, learning-rate schedules, gradient clipping and loss scaling.

    SGD, Adam, AdamW      the updates written out, equal to torch.optim's (tests/test_optim.py)
    SCHEDULES, lr_at      constant, linear, cosine, inverse square root; linear warmup
    clip_grad_norm        global-norm clipping
    DynamicLossScaler     fp16 loss scaling
"""

import re

from minilm.optim.adam import Adam, AdamW
from minilm.optim.clip import clip_grad_norm
from minilm.optim.loss_scale import DynamicLossScaler
from minilm.optim.schedules import SCHEDULES, lr_at, set_lr
from minilm.optim.sgd import SGD

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")  # transformer.blocks.3.attn... -> 3


def layer_depth(name: str, n_layer: int) -> int:
    """l of a parameter: 0 the embeddings, 1..L the blocks (bottom up), L + 1 all above them
    (the final norm, the heads)."""
    block = BLOCK.search(name)
    if block:
        return int(block.group(1)) + 1
    return 0 if "embed" in name else n_layer + 1


def param_groups(model, weight_decay: float, layer_decay: float = 1.0):
    """Weight decay on matrices only: biases, norm gains and embeddings are not decayed
    (as in BERT's and GPT-2's training code).

    Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020; "discriminative fine-tuning",
    Howard & Ruder 2018) scales each parameter's learning rate by its depth l (`layer_depth`):

        lr_l = lr * layer_decay^(L + 1 - l)

    so the heads learn at lr and the embeddings at lr * layer_decay^(L + 1): the lower layers, which
    hold the most general features, move least. Each group carries its "lr_scale" (set_lr reads it);
    layer_decay = 1 gives the two groups of plain training."""
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay {layer_decay}: must lie in (0, 1] (1: no decay)")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]  # tied parameters appear once

    def decayed(name, p):
        return p.dim() >= 2 and "embed" not in name

    if layer_decay == 1:
        return [{"params": [p for n, p in named if decayed(n, p)], "weight_decay": weight_decay},
                {"params": [p for n, p in named if not decayed(n, p)], "weight_decay": 0.0}]
    config = model.config
    if config.arch == "encoder-decoder":
        raise ValueError("layer-wise learning-rate decay is defined here for one stack of blocks (an encoder or a decoder), "
                         "not for an encoder-decoder")
    groups = {}  # (depth, decayed) -> group, in the order parameters appear
    for name, p in named:
        depth, d = layer_depth(name, config.n_layer), decayed(name, p)
        group = groups.setdefault((depth, d), {"params": [], "weight_decay": weight_decay if d else 0.0,
                                               "lr_scale": layer_decay ** (config.n_layer + 1 - depth)})
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(name: str, model, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8, momentum=0.9, foreach=True,
                    layer_decay: float = 1.0):
    """The optimizer `name` over `model`'s parameters, with weight decay on matrices only and
    (layer_decay < 1) layer-wise learning-rate decay (param_groups)."""
    groups = param_groups(model, weight_decay, layer_decay)
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, foreach=foreach)
    if name in ("adam", "adamw"):
        return OPTIMIZERS[name](groups, lr=lr, betas=betas, eps=eps, foreach=foreach)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "DynamicLossScaler", "build_optimizer", "clip_grad_norm", "lr_at", "param_groups", "set_lr"]
