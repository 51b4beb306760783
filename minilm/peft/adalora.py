"""AdaLoRA: a LoRA whose rank moves to where it matters (Zhang et al. 2023, "Adaptive Budget
Allocation for Parameter-Efficient Fine-Tuning").

Each adapted layer's update is written like a singular value decomposition,

    h = W x + b + (alpha / r) * P diag(lambda) Q dropout(x)     W (out, in) and b frozen
                                                                P (out, r), Q (r, in), lambda (r,)

one "triplet" (P[:, i], lambda_i, Q[i, :]) per rank. lambda starts at 0 (the layer starts as the
pretrained one), P and Q as random orthonormal matrices, so that lambda_i is from the start the
i-th singular value of the update (the paper draws P and Q Gaussian; with small Gaussian P and Q
the update, and the gradient of lambda, start tiny). Three things differ from LoRA's B A:

1. Orthogonality. P and Q are kept near orthogonal by a penalty added to the task loss, averaged
   over the adapted layers:
       R(P, Q) = ||P^T P - I||_F^2 + ||Q Q^T - I||_F^2        loss = L + gamma * mean R
   so that zeroing lambda_i removes one direction of the update and leaves the others as they were.
2. Importance. Each entry w of P, lambda and Q has a sensitivity I = |w dL/dw|, smoothed and with
   its uncertainty (beta_1 = beta_2 = 0.85):
       I_bar(t) = beta_1 I_bar(t-1) + (1 - beta_1) I(t)
       U_bar(t) = beta_2 U_bar(t-1) + (1 - beta_2) |I(t) - I_bar(t)|
       s(w)     = I_bar(t) U_bar(t)
   and a triplet's score is S_i = s(lambda_i) + mean_j s(P_ji) + mean_j s(Q_ij).
3. A budget. The number of triplets kept over all layers, b(t), starts at b(0) = every triplet
   (each layer at its initial rank r) and falls along a cubic schedule to b(T) (the target rank
   times the number of layers):
       b(t) = b(0)                                                      t < t_i
       b(t) = b(T) + (b(0) - b(T)) (1 - (t - t_i) / (T - t_i - t_f))^3  t_i <= t < T - t_f
       b(t) = b(T)                                                      the last t_f steps
   After an update, the lambda_i of every triplet outside the b(t) best scores is set to 0. A
   zeroed triplet can come back while the budget still moves (lambda_i keeps its gradient); over
   the last t_f steps the pattern is fixed. The budget counts triplets, as the paper does; a
   triplet of a feed-forward layer (1,024 + 256 + 1 numbers in `mini`) holds more parameters than
   one of an attention projection (256 + 256 + 1): `RankAllocator.report` counts both.

Departures from the paper: the reallocation runs every `every` steps (the paper's Delta T) while
the budget moves; the importance averages live in memory only, so `--resume` starts them again
(they forget their past within about ten steps at beta = 0.85). After training the update folds
into the weight like LoRA's, W' = W + (alpha / r) P diag(lambda) Q (`merge`).
"""

from __future__ import annotations

import torch
from torch import nn

from minilm.peft.lora import LowRankLinear


class SVDLinear(LowRankLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__(base, r, alpha, dropout)
        kw = dict(dtype=base.weight.dtype, device=base.weight.device)
        self.lora_P = nn.Parameter(torch.empty(base.out_features, r, **kw))
        self.lora_lambda = nn.Parameter(torch.zeros(r, **kw))
        self.lora_Q = nn.Parameter(torch.empty(r, base.in_features, **kw))
        nn.init.orthogonal_(self.lora_P)  # orthonormal columns (or rows, when r > out): R(P, Q) starts at its least
        nn.init.orthogonal_(self.lora_Q)

    def forward(self, x):  # (..., in) -> (..., out)
        return self.base(x) + ((self.dropout(x) @ self.lora_Q.T) * self.lora_lambda) @ self.lora_P.T * self.scaling

    def delta(self) -> torch.Tensor:
        """P diag(lambda) Q (out, in)."""
        return (self.lora_P * self.lora_lambda) @ self.lora_Q

    def orthogonality(self) -> torch.Tensor:
        """R(P, Q) = ||P^T P - I||_F^2 + ||Q Q^T - I||_F^2."""
        eye = torch.eye(self.r, dtype=torch.float32, device=self.lora_P.device)
        P, Q = self.lora_P.float(), self.lora_Q.float()
        return ((P.T @ P - eye) ** 2).sum() + ((Q @ Q.T - eye) ** 2).sum()


def svd_layers(model) -> dict[str, SVDLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SVDLinear)}


def orthogonality_loss(loss_fn, gamma: float):
    """Wrap a trainer loss_fn: its {part: (sum, count)} plus "orthogonality": gamma * mean R(P, Q)
    over the adapted layers (counted once: see orthogonality_targets)."""

    def wrapped(model, batch):
        parts = loss_fn(model, batch)
        layers = list(svd_layers(model).values())
        penalty = sum(m.orthogonality() for m in layers) / len(layers)
        return {**parts, "orthogonality": (gamma * penalty, 1)}

    return wrapped


def orthogonality_targets(targets_fn):
    def targets(batch):
        return {**targets_fn(batch), "orthogonality": 1}

    return targets


class RankAllocator:
    """The importance scores and the budget; `after_step(step)` runs after each optimizer step,
    while the gradients of that step are still on the parameters."""

    def __init__(self, model, target_r: int, total_steps: int, t_init: int, t_final: int, every: int = 10,
                 beta1: float = 0.85, beta2: float = 0.85):
        self.layers = svd_layers(model)
        if not self.layers:
            raise ValueError("AdaLoRA: the model has no adapted layer")
        r = next(iter(self.layers.values())).r
        if not 1 <= target_r <= r:
            raise ValueError(f"AdaLoRA: the target rank must lie in [1, {r}] (the initial rank), got {target_r}")
        self.b0, self.bT = r * len(self.layers), target_r * len(self.layers)
        self.total, self.t_init, self.t_final, self.every = total_steps, t_init, t_final, max(1, every)
        self.beta1, self.beta2 = beta1, beta2
        self.ipt, self.unc = {}, {}  # I_bar and U_bar per parameter
        self.fixed = None  # the kept triplets over the last t_final steps: {layer name: (r,) bool}

    def budget(self, step: int) -> int:
        """b(t): the number of triplets kept after step t."""
        if step < self.t_init:
            return self.b0
        if step >= self.total - self.t_final:
            return self.bT
        span = max(1, self.total - self.t_final - self.t_init)
        return int(self.bT + (self.b0 - self.bT) * (1 - (step - self.t_init) / span) ** 3)

    @torch.no_grad()
    def update_importance(self) -> None:
        for name, m in self.layers.items():
            for p in (m.lora_P, m.lora_lambda, m.lora_Q):
                if p.grad is None:
                    continue
                sensitivity = (p * p.grad).abs().float()
                key = (name, id(p))
                if key not in self.ipt:
                    self.ipt[key], self.unc[key] = torch.zeros_like(sensitivity), torch.zeros_like(sensitivity)
                self.ipt[key].mul_(self.beta1).add_(sensitivity, alpha=1 - self.beta1)
                self.unc[key].mul_(self.beta2).add_((sensitivity - self.ipt[key]).abs(), alpha=1 - self.beta2)

    def scores(self) -> dict[str, torch.Tensor]:
        """S_i per triplet of each layer, (r,)."""
        out = {}
        for name, m in self.layers.items():
            def s(p):
                key = (name, id(p))
                return self.ipt[key] * self.unc[key] if key in self.ipt else torch.zeros(p.shape, device=p.device)
            out[name] = s(m.lora_lambda) + s(m.lora_P).mean(dim=0) + s(m.lora_Q).mean(dim=1)
        return out

    def keep(self, budget: int) -> dict[str, torch.Tensor]:
        """The b best triplets over all layers: {layer name: (r,) bool}."""
        scores = self.scores()
        flat = torch.cat(list(scores.values()))
        kept = torch.zeros_like(flat, dtype=torch.bool)
        kept[torch.topk(flat, budget).indices] = True
        return dict(zip(scores, kept.split([len(v) for v in scores.values()])))

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        self.update_importance()
        if step < self.t_init:
            return
        if step >= self.total - self.t_final:
            self.fixed = self.fixed or self.keep(self.bT)
            masks = self.fixed
        elif step % self.every == 0:
            masks = self.keep(self.budget(step))
        else:
            return
        for name, m in self.layers.items():
            m.lora_lambda.masked_fill_(~masks[name].to(m.lora_lambda.device), 0.0)

    def report(self) -> dict:
        """The rank each layer ends with (its nonzero lambdas) and the parameters those triplets hold."""
        ranks = {name: int((m.lora_lambda != 0).sum()) for name, m in self.layers.items()}
        kept = sum(ranks[n] * (m.base.in_features + m.base.out_features + 1) for n, m in self.layers.items())
        return {"ranks": ranks, "kept_parameters": kept, "budget": self.bT}
