"""Hand-written optimizers and schedules (the training-engine issue adds SGD and Adam beside AdamW)."""

from minilm.optim.adamw import AdamW
from minilm.optim.schedules import clip_grad_norm, set_lr, warmup_cosine


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


__all__ = ["AdamW", "clip_grad_norm", "param_groups", "set_lr", "warmup_cosine"]
