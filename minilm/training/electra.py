"""Replaced-token detection: ELECTRA (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators").

Two encoders train together. A small generator G is a masked LM; the discriminator D, the encoder
we keep, reads the text with G's guesses written into the masked positions and says, for every
token, whether it was replaced. D learns from all n tokens of a sequence, not from the 15% masked.

    m = masked positions (BERT's masking: minilm/objectives.py: mask_tokens)
    x^masked = x with [MASK] (80%), a random token (10%) or itself (10%) at m
    x^_i ~ p_G(x_i | x^masked)  for i in m                      sampled: no gradient flows through it
    x^corrupt = x with x^_i at each i in m
    y_t = 1[x^corrupt_t != x_t]                                 a sample equal to the original is "original"
    D(x^corrupt, t) = sigmoid(w^T h_D(x^corrupt)_t + b)         the probability that token t was replaced

    L_MLM  = -(1 / |m|) sum_{i in m} log p_G(x_i | x^masked)
    L_Disc = -(1 / n) sum_{t real} [y_t log D(x^corrupt, t) + (1 - y_t) log(1 - D(x^corrupt, t))]
    L      = L_MLM + lambda L_Disc,     lambda = 50 (the paper's)

Departures from the paper: D predicts "replaced" (y = 1), as the released code does, where the paper
writes D as the probability of "original" (1 - ours); L_Disc is the mean over all real (non-padding)
tokens of the batch ([CLS] and [SEP] included), the released code's normalisation.

Sizes and sharing (the paper's section 3.2): G has D's depth and a fraction of its width
(`generator_size`, 1/4 by default; the paper finds 1/4 to 1/2 of D's width best). G and D share their
embeddings, token, position and segment (and the norm after their sum): G's embedding module IS D's,
of width C, followed by a linear projection down to G's width c (the released code's
`embeddings_project`). G's MLM head maps c back to C, and its output layer is that shared token
table, so the discriminator's embeddings learn from both losses.

`ELECTRA` wraps the pair (and D's replaced-token head) as the one module the trainer optimises and
checkpoints. Its `kept` names the discriminator: a checkpoint stores D as a plain Encoder
(model.safetensors + config.json, loadable with `minilm.from_pretrained` and `finetune.py --init`)
and G and the head beside it in helpers.safetensors, for --resume (minilm/checkpoint.py).

Notation: B batch, T time, C the discriminator's width, c the generator's, V vocabulary,
N masked positions of a batch, R real (non-padding) positions of a batch.
"""

from __future__ import annotations

import torch
from torch import nn

from minilm.metrics import perplexity
from minilm.model.blocks import Transformer
from minilm.model.families import Encoder, Model
from minilm.model.heads import MLMHead
from minilm.objectives import IGNORE_INDEX, binary_cross_entropy_sum, count_targets, cross_entropy_sum


def generator_config(config, size: float):
    """The generator's ModelConfig: the discriminator's with its width scaled by `size` and its depth
    kept, c = round(size * C); the heads scaled alike (at least one, and a divisor of c), so the
    head size stays near D's, as in the released code; d_ff scaled when D sets it (else 4c)."""
    if not 0 < size <= 1:
        raise ValueError(f"generator size {size}: must lie in (0, 1], a fraction of the discriminator's width")
    c = max(1, round(size * config.n_embd))
    n_head = max(1, round(size * config.n_head))
    while c % n_head:
        n_head -= 1
    d_ff = None if config.d_ff is None else max(1, round(size * config.d_ff))
    return config.replace(n_embd=c, n_head=n_head, d_ff=d_ff, head="none")


class ProjectedEmbeddings(nn.Module):
    """The discriminator's embeddings, shared, then projected to the generator's width:
    e_G = W_p e_D + b_p,  e_D (B, T, C) -> e_G (B, T, c). No projection when c = C."""

    def __init__(self, shared, n_embd: int, init_std: float = 0.02):
        super().__init__()
        self.shared = shared  # the discriminator's Embeddings module itself, not a copy
        width = shared.token.embedding_dim
        self.project = nn.Linear(width, n_embd) if n_embd != width else nn.Identity()
        if n_embd != width:
            nn.init.normal_(self.project.weight, 0.0, init_std)
            nn.init.zeros_(self.project.bias)

    def forward(self, input_ids, position_ids, segment_ids=None):
        return self.project(self.shared(input_ids, position_ids, segment_ids))  # (B, T, C) -> (B, T, c)


class Generator(Model):
    """ELECTRA's generator: an MLM encoder of width c on the shared embeddings.

        h_G = Transformer_c(W_p e_D(x^masked))                 (B, T, c)
        p_G(. | x^masked)_t = softmax(LN(act(W h_G,t + b)) E_tok^T + b_V)   W: c -> C, E_tok (V, C) shared
    """

    def __init__(self, config, embed):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config, config.n_layer, causal=False)
        self.mlm = MLMHead(embed.config, n_in=config.n_embd)  # c -> C, then scores over the vocabulary
        self.init_weights()
        # then the sharing, after the initialisation, which must not redraw D's (perhaps pretrained) embeddings
        self.transformer.embed = ProjectedEmbeddings(embed, config.n_embd, config.init_std)  # in place of the c-wide table it built
        self.mlm.decoder.weight = embed.token.weight  # the output layer is the shared token table E_tok

    def hidden(self, input_ids, attention_mask=None, segment_ids=None):
        """input_ids (B, T) -> (B, T, c)."""
        return self.transformer(input_ids, attention_mask=attention_mask, segment_ids=segment_ids)


class ELECTRA(nn.Module):
    """The discriminator (an Encoder, the model being pretrained), the generator and the
    replaced-token head D(x, t) = sigmoid(w^T h_D(x)_t + b), with lambda, the weight of L_Disc."""

    kept = "discriminator"  # what a checkpoint stores as its model (minilm/checkpoint.py: kept_model)

    def __init__(self, discriminator: Encoder, generator_size: float = 0.25, rtd_weight: float = 50.0):
        super().__init__()
        config = discriminator.config
        if config.arch != "encoder":
            raise ValueError(f"ELECTRA pretrains an encoder, not {config.arch!r}")
        if config.pos == "alibi":  # the generator reads the discriminator's embeddings, but has heads of its own
            raise ValueError("ELECTRA with ALiBi positions is not supported: the generator has its own heads, and no slopes of its own")
        if rtd_weight <= 0:
            raise ValueError(f"the weight lambda of the discriminator's loss must be positive, got {rtd_weight}")
        self.discriminator = discriminator  # registered first: the shared embeddings are stored under its names
        self.generator = Generator(generator_config(config, generator_size), discriminator.transformer.embed)
        self.rtd = nn.Linear(config.n_embd, 1)  # w, b
        nn.init.normal_(self.rtd.weight, 0.0, config.init_std)
        nn.init.zeros_(self.rtd.bias)
        self.generator_size, self.rtd_weight = generator_size, rtd_weight

    def rtd_logits(self, h):
        """(..., C) -> (...): the logit of "replaced", w^T h + b."""
        return self.rtd(h).squeeze(-1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# -- the objective --------------------------------------------------------------------------------
def sample_categorical(probs, generator: torch.Generator | None = None):
    """One draw per row of probs (N, V) by inverting the cumulative distribution:

        x = min { i : F_i > u * F_V },   F_i = p_1 + ... + p_i,   u ~ U(0, 1)

    N uniform numbers instead of torch.multinomial's N x V exponential ones: on a CPU the draws
    alone took longer than the generator's forward pass. Tokens with p_i = 0 are never drawn."""
    F = probs.cumsum(-1)  # (N, V)
    u = torch.rand(len(probs), 1, generator=generator, dtype=F.dtype) * F[:, -1:]  # (N, 1)
    return torch.searchsorted(F, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)  # (N,)


def replace_tokens(input_ids, labels, logits, generator: torch.Generator | None = None):
    """x^corrupt from the generator's logits at the masked positions.

    input_ids (B, T): x^masked; labels (B, T): x_i at the masked positions, IGNORE_INDEX elsewhere;
    logits (N, V): the generator's at the N masked positions, in row-major order.
    Returns x^corrupt (B, T) and y (B, T) bool, y_t = 1[x^corrupt_t != x_t].
    The samples come from the detached logits (sample_categorical): no gradient flows through them."""
    masked = labels != IGNORE_INDEX  # (B, T)
    original = torch.where(masked, labels, input_ids)  # x (B, T)
    probs = torch.softmax(logits.detach().float(), dim=-1)  # (N, V)
    samples = sample_categorical(probs, generator) if len(probs) else labels[masked]  # (N,)
    corrupt = original.clone()
    corrupt[masked] = samples
    return corrupt, corrupt != original


def predictions(model: ELECTRA, batch: dict, generator: torch.Generator | None = None) -> dict:
    """{"mlm": (G's logits (N, V), x at the masked positions (N,)),
        "rtd": (D's logits (R,), y (R,) float)} for a batch of masked sequences."""
    input_ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    segments = batch.get("segment_ids")
    masked = labels != IGNORE_INDEX  # (B, T)
    h_G = model.generator.hidden(input_ids, mask, segments)  # (B, T, c)
    mlm_logits = model.generator.mlm(h_G[masked])  # (N, V): the head at masked positions only
    corrupt, replaced = replace_tokens(input_ids, labels, mlm_logits, generator)  # (B, T) each
    h_D = model.discriminator.hidden(corrupt, mask, segments)  # (B, T, C)
    real = mask.bool()  # (B, T)
    return {"mlm": (mlm_logits, labels[masked]), "rtd": (model.rtd_logits(h_D[real]), replaced[real].float())}  # (R,), (R,)


def loss(model: ELECTRA, batch: dict) -> dict:
    """The trainer's parts: {"mlm": (sum_i CE, |m|), "rtd": (lambda sum_t BCE, R)}. The trainer
    divides each sum by its count (of the whole batch) and adds them: L_MLM + lambda L_Disc."""
    out = predictions(model, batch)
    total, count = binary_cross_entropy_sum(*out["rtd"])
    return {"mlm": cross_entropy_sum(*out["mlm"]), "rtd": (model.rtd_weight * total, count)}


def targets(batch: dict) -> dict:
    """{"mlm": masked tokens, "rtd": real tokens} of a batch, known before any forward pass."""
    return {"mlm": count_targets(batch["labels"]), "rtd": int(batch["attention_mask"].sum())}


@torch.no_grad()
def evaluate(model: ELECTRA, val_batches, seed: int = 0) -> dict:
    """val_loss = L_MLM + lambda L_Disc (as trained), val_ppl and mlm_accuracy of the generator,
    val_rtd_loss (L_Disc) and the discriminator's accuracy over all real tokens, on the replaced ones
    (recall of "replaced") and on the original ones, and the share of tokens replaced. The
    replacements are drawn from a generator seeded with `seed`, so every evaluation corrupts alike
    and none draws from the training run's random numbers."""
    sampler = None
    sums = {"mlm": 0.0, "rtd": 0.0}
    n = dict.fromkeys(("mlm", "rtd", "mlm_hits", "rtd_hits", "replaced", "replaced_hits", "original_hits"), 0)
    for batch in val_batches:
        if sampler is None:
            sampler = torch.Generator(batch["input_ids"].device).manual_seed(seed)
        out = predictions(model, batch, sampler)
        logits, x = out["mlm"]
        total, count = cross_entropy_sum(logits, x)
        sums["mlm"] += float(total)
        n["mlm"] += count
        n["mlm_hits"] += int((logits.argmax(-1) == x).sum())
        z, y = out["rtd"]
        total, count = binary_cross_entropy_sum(z, y)
        sums["rtd"] += float(total)
        n["rtd"] += count
        guess, y = z > 0, y.bool()
        n["rtd_hits"] += int((guess == y).sum())
        n["replaced"] += int(y.sum())
        n["replaced_hits"] += int((guess & y).sum())
        n["original_hits"] += int((~guess & ~y).sum())
    mlm_loss = sums["mlm"] / max(n["mlm"], 1)
    rtd_loss = sums["rtd"] / max(n["rtd"], 1)
    return {
        "val_loss": mlm_loss + model.rtd_weight * rtd_loss,
        "val_ppl": perplexity(mlm_loss),
        "val_mlm_loss": mlm_loss,
        "val_rtd_loss": rtd_loss,
        "mlm_accuracy": n["mlm_hits"] / max(n["mlm"], 1),
        "rtd_accuracy": n["rtd_hits"] / max(n["rtd"], 1),
        "rtd_replaced_accuracy": n["replaced_hits"] / max(n["replaced"], 1),
        "rtd_original_accuracy": n["original_hits"] / max(n["rtd"] - n["replaced"], 1),
        "replaced_fraction": n["replaced"] / max(n["rtd"], 1),
    }
