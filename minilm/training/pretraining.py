"""Pretraining tasks: what each objective computes from a model and a batch, and how it is evaluated.

`predictions(model, batch, objective)` returns {part: (logits, labels)} for the parts of the
objective ("mlm" and "nsp" for BERT's, "mlm" and "rtd" for ELECTRA's (minilm/training/electra.py), one part
for the others). `pretraining_loss` turns them into {part: (summed loss, number of targets)}, which
the trainer divides; `evaluate_pretraining` reports held-out loss, perplexity and accuracies from
the same predictions.
"""

from __future__ import annotations

import torch

from minilm.metrics import perplexity
from minilm.objectives import IGNORE_INDEX, count_targets, cross_entropy_sum
from minilm.training import electra

OBJECTIVE_ARCH = {"mlm": "encoder", "mlm+nsp": "encoder", "clm": "decoder", "denoise": "encoder-decoder", "electra": "encoder"}
# ELECTRA's discriminator is a headless encoder: its generator and replaced-token head live beside
# it in the electra.ELECTRA module that training wraps around it
OBJECTIVE_HEAD = {"mlm": "mlm", "mlm+nsp": "mlm+nsp", "clm": "lm", "denoise": "lm", "electra": "none"}


def predictions(model, batch, objective: str) -> dict:
    if objective == "electra":
        return electra.predictions(model, batch)
    if objective in ("mlm", "mlm+nsp"):
        h = model.hidden(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))  # (B, T, C)
        masked = batch["labels"] != IGNORE_INDEX
        out = {"mlm": (model.mlm(h[masked]), batch["labels"][masked])}  # (N_masked, V): the head at masked positions only
        if objective == "mlm+nsp":
            out["nsp"] = (model.nsp_logits(h, batch["attention_mask"]), batch["nsp_labels"])  # (B, 2)
        return out
    if objective == "clm":
        logits = model(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))  # (B, T, V)
        return {"clm": (logits, batch["labels"])}  # labels = inputs shifted by one
    logits = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"], batch["decoder_attention_mask"])
    return {"denoise": (logits, batch["labels"])}


def pretraining_loss(objective: str):
    """The trainer's loss_fn for an objective: {part: (sum of losses, count of targets)}."""

    def loss_fn(model, batch):
        if objective == "electra":  # the discriminator's part weighted by lambda
            return electra.loss(model, batch)
        if objective == "clm":  # the LM head sums the loss itself (in chunks of rows, with loss_impl "chunked")
            return {"clm": model.lm_loss(batch["input_ids"], batch["labels"], batch.get("attention_mask"), batch.get("position_ids"))}
        return {part: cross_entropy_sum(logits, labels) for part, (logits, labels) in predictions(model, batch, objective).items()}

    return loss_fn


LABELS = {"mlm": "labels", "nsp": "nsp_labels", "clm": "labels", "denoise": "labels"}  # part -> batch key of its targets


def pretraining_targets(objective: str):
    """The trainer's targets: {part: number of targets in a batch}, known before any forward pass."""
    if objective == "electra":
        return electra.targets
    parts = {"mlm+nsp": ("mlm", "nsp")}.get(objective, (objective,))

    def targets(batch):
        return {part: count_targets(batch[LABELS[part]]) for part in parts}

    return targets


@torch.no_grad()
def evaluate_pretraining(model, objective: str, val_batches) -> dict:
    """val_loss (summed over parts, as trained), val_ppl (of the token part: MLM, CLM or denoising),
    and <part>_accuracy for each part. ELECTRA reports its generator's and discriminator's own
    (minilm/training/electra.py: evaluate)."""
    if objective == "electra":
        return electra.evaluate(model, val_batches)
    sums, counts, hits = {}, {}, {}
    for batch in val_batches:
        for part, (logits, labels) in predictions(model, batch, objective).items():
            total, count = cross_entropy_sum(logits, labels)
            keep = labels != IGNORE_INDEX
            sums[part] = sums.get(part, 0.0) + float(total)
            counts[part] = counts.get(part, 0) + count
            hits[part] = hits.get(part, 0) + int((logits.argmax(-1)[keep] == labels[keep]).sum())
    token_part = "mlm" if objective == "mlm+nsp" else objective
    token_loss = sums[token_part] / max(counts[token_part], 1)
    metrics = {"val_loss": sum(sums[p] / max(counts[p], 1) for p in sums), "val_ppl": perplexity(token_loss)}
    if objective == "mlm+nsp":
        metrics["val_mlm_loss"] = token_loss
    for part in hits:
        name = "token" if part in ("clm", "denoise") else part
        metrics[f"{name}_accuracy"] = hits[part] / max(counts[part], 1)
    return metrics


def unigram_log_probs(counts) -> torch.Tensor:
    """log p(v) = log (n(v) + 1) / (N + V), the add-one unigram model of token counts (V,), float64."""
    c = torch.as_tensor(counts, dtype=torch.float64) + 1.0
    return (c / c.sum()).log()


@torch.no_grad()
def init_output_bias(model, counts) -> bool:
    """Set the vocabulary bias of an MLM or LM head to the log unigram frequencies of the training
    tokens, b_v = log p(v) with add-one counts, so training starts from the unigram model instead
    of the uniform one: a short run spends its steps on context rather than on word frequencies
    (Adam moves each bias by about lr per step, so learning log-frequencies that span ~10 nats
    through the bias alone takes thousands of steps). Returns False when the head has no bias.
    For ELECTRA, the generator's MLM head."""
    model = getattr(model, "generator", model)
    head = getattr(model, "mlm", None)
    head = head.decoder if head is not None else getattr(model, "lm_head", None)
    if head is None or getattr(head, "bias", None) is None:
        return False
    logp = unigram_log_probs(counts)
    head.bias.copy_((logp - logp.mean()).to(head.bias.dtype))
    return True


def unigram_baseline(train_counts, val_counts) -> float:
    """Cross-entropy (nats per token) of the add-one unigram distribution of the training tokens on
    the validation tokens, from token counts (V,): the loss a model reaches from token frequencies
    alone.  H = -sum_v n_val(v) log p(v) / sum_v n_val(v),  p(v) = (n_train(v) + 1) / (N_train + V)."""
    logp = unigram_log_probs(train_counts)
    val = torch.as_tensor(val_counts, dtype=torch.float64)
    return float(-(val * logp).sum() / val.sum())
