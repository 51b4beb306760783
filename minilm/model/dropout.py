"""Dropout (Srivastava et al. 2014): in training, zero each activation with probability p and scale
the rest by 1 / (1 - p); at evaluation, the identity.

With p = 0 (GPT-2-style checkpoints, nanoGPT's small configs) a dropout layer is the identity
in training too, so none is built: it would only add a call per layer to every decoding step.
"""

from torch import nn


def make_dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()
