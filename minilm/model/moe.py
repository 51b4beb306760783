"""A mixture-of-experts feed-forward network (`mlp="moe"`): top-k routing over E small FFNs, with
the load-balancing loss of Switch Transformer.

Notation: N tokens (B T), C channels, E experts (`moe_experts`), k experts per token (`moe_top_k`).

    p = softmax(W_r x)                              (N, E) router probabilities
    S = top-k(p)                                    each token's k experts
    y = sum_{e in S} (p_e / sum_{e' in S} p_e') FFN_e(x)       (Shazeer et al. 2017; Mixtral's renormalised gates)

Every token is sent to its k experts (no capacity limit, so no token is dropped and a token's
output never depends on the other tokens of the batch). Left alone, the router collapses onto a
few experts; the auxiliary loss (Fedus et al. 2022, eq. 4) pushes the load towards uniform:

    L_aux = E * sum_e f_e P_e,    f_e = the share of the N k assignments that go to expert e,
                                  P_e = the mean router probability of expert e

which is 1 for a uniform router and grows as the load concentrates. Each MoE layer keeps its last
L_aux and its tokens per expert; the trainer adds `moe_aux_weight` x their mean to the loss
(`aux_loss`) and logs the load (`expert_load`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from minilm.model.mlp import FeedForward
from minilm.model.registry import register


@register("mlp", "moe")
class MixtureOfExperts(nn.Module):
    def __init__(self, config, inner: int | None = None):
        super().__init__()
        self.n_experts, self.top_k, self.aux_weight = config.moe_experts, config.moe_top_k, config.moe_aux_weight
        self.router = nn.Linear(config.n_embd, self.n_experts, bias=False)  # W_r
        expert = config.replace(mlp="gelu")  # each expert a plain GELU FFN of the block's inner size
        self.experts = nn.ModuleList(FeedForward(expert, inner) for _ in range(self.n_experts))
        self.aux_loss = None  # L_aux of the last forward
        self.tokens_per_expert = None  # (E,) assignments of the last forward

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        probs = F.softmax(self.router(flat), dim=-1, dtype=torch.float32)  # (N, E)
        gate, chosen = probs.topk(self.top_k, dim=-1)  # (N, k) each
        gate = (gate / gate.sum(-1, keepdim=True)).to(x.dtype)  # renormalised over the k chosen
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)  # the tokens routed to e, and which of their k slots
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * gate[token, slot, None])
        counts = torch.bincount(chosen.flatten(), minlength=self.n_experts)  # (E,)
        f = counts.float() / chosen.numel()  # share of assignments
        self.aux_loss = self.n_experts * (f * probs.mean(0)).sum()  # gradient flows through P_e
        self.tokens_per_expert = counts.detach()
        return out.view(B, T, C)


def moe_layers(model) -> list[MixtureOfExperts]:
    return [m for m in model.modules() if isinstance(m, MixtureOfExperts)]


def aux_loss(model):
    """moe_aux_weight x the mean L_aux of the model's MoE layers after its last forward (what the
    trainer adds to the loss), or None for a model without them."""
    layers = [m for m in moe_layers(model) if m.aux_loss is not None]
    if not layers:
        return None
    return layers[0].aux_weight * torch.stack([m.aux_loss for m in layers]).mean()


def expert_load(model) -> dict:
    """Tokens per expert in the last forward, summed over layers, and the largest share any expert took."""
    counts = [m.tokens_per_expert for m in moe_layers(model) if m.tokens_per_expert is not None]
    if not counts:
        return {}
    total = torch.stack(counts).sum(0)
    return {"tokens_per_expert": total.tolist(), "max_expert_share": (total.max() / total.sum()).item()}
