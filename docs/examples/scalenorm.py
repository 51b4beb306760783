"""A variant added from outside minilm: ScaleNorm (Nguyen & Salazar 2019, "Transformers without
Tears"), registered as the norm "scalenorm".

    y = g * x / max(||x||, eps)        one learned scalar g per norm, initialised to sqrt(C)

Use it from any script:

    python train.py --plugin docs/examples/scalenorm.py --norm scalenorm --data corpus.txt --max-steps 100
    python infer.py generate --plugin docs/examples/scalenorm.py --ckpt runs/... --prompt "..."

or from Python, after importing this file: `ModelConfig(norm="scalenorm")`. The constructor takes
what every norm takes (n_embd, eps, bias); see minilm/model/registry.py for the other extension points.
"""

import math

import torch
from torch import nn

from minilm.model.registry import register


@register("norm", "scalenorm")
class ScaleNorm(nn.Module):
    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.tensor(math.sqrt(n_embd)))  # one scalar

    def forward(self, x):  # (..., C) -> (..., C)
        return self.g * x / x.norm(dim=-1, keepdim=True).clamp(min=self.eps)
