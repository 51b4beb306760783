"""Hand-written optimizers, learning-rate schedules, gradient clipping and loss scaling.

    SGD, Adam, AdamW      the updates written out, equal to torch.optim's (tests/test_optim.py)
    SCHEDULES, lr_at      constant, linear, cosine, inverse square root; linear warmup
    clip_grad_norm        global-norm clipping
    DynamicLossScaler     fp16 loss scaling
"""

from minilm.optim.adam import Adam, AdamW
from minilm.optim.clip import clip_grad_norm
from minilm.optim.loss_scale import DynamicLossScaler
from minilm.optim.schedules import SCHEDULES, lr_at, set_lr
from minilm.optim.sgd import SGD

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def param_groups(model, weight_decay: float):
    """Weight decay on matrices only: biases, norm gains and embeddings are not decayed
    (as in BERT's and GPT-2's training code)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        if p.dim() < 2 or "embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8, momentum=0.9, foreach=True):
    """The optimizer `name` over `model`'s parameters, with weight decay on matrices only."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, foreach=foreach)
    if name in ("adam", "adamw"):
        return OPTIMIZERS[name](groups, lr=lr, betas=betas, eps=eps, foreach=foreach)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "DynamicLossScaler", "build_optimizer", "clip_grad_norm", "lr_at", "param_groups", "set_lr"]
