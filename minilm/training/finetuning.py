"""Fine-tuning tasks: a head on a (pretrained) backbone, its loss and its evaluation.

    cls          sequence classification: logits (B, L), cross-entropy, accuracy and P/R/F1
    regression   one value per text (pair): (B,), mean squared error, Pearson and Spearman
    ner          one tag per word (token classification): logits (B, T, L) on each word's first
                 subword, cross-entropy there; entity P/R/F1 for BIO tags, else tag accuracy and F1
    sft          a decoder trained on responses to prompts; seq2seq: an encoder-decoder trained on
                 source -> target (minilm/training/text_tasks.py): perplexity, exact match and chrF

`init_model` builds the task model from a checkpoint (its backbone weights loaded, the head new)
or from scratch.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from minilm.checkpoint import init_model  # noqa: F401  (a name of this module too: how a task model starts)
from minilm.inference.task_outputs import forward_task, predict, predict_tags
from minilm.metrics import classification_report, entity_report, is_bio, pearson, spearman
from minilm.objectives import IGNORE_INDEX
from minilm.training.text_tasks import evaluate_text_task, text_loss

TASK_HEADS = {"cls": "cls", "regression": "regression", "ner": "token", "sft": "lm", "seq2seq": "lm"}
TASK_ARCH = {"sft": "decoder", "seq2seq": "encoder-decoder"}  # the others sit on an encoder


def freeze(model, embeddings: bool = False, layers: int = 0) -> tuple[int, int]:
    """Stop training the token/position/segment embeddings and/or the first `layers` blocks of the
    backbone (the lower layers hold the most general features; Howard & Ruder 2018). Returns
    (trainable, total) parameter counts."""
    backbone = model.transformer if hasattr(model, "transformer") else model.encoder
    if layers > len(backbone.blocks):
        raise ValueError(f"--freeze-layers {layers}: the model has {len(backbone.blocks)} blocks")
    frozen = [*(backbone.embed.parameters() if embeddings else []), *(p for b in backbone.blocks[:layers] for p in b.parameters())]
    for p in frozen:
        p.requires_grad_(False)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def task_loss(task: str):
    """The trainer's loss_fn: {task: (summed loss, number of examples)}."""

    def loss_fn(model, batch):
        if task in TASK_ARCH:
            return text_loss(model, batch)
        out = forward_task(model, batch)
        if task == "regression":
            return {"mse": (F.mse_loss(out.float(), batch["labels"].float(), reduction="sum"), len(out))}
        if task == "ner":  # out (B, T, L); labels (B, T), IGNORE_INDEX off the first subwords
            labels = batch["labels"]
            loss = F.cross_entropy(out.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
            return {"ce": (loss, int((labels != IGNORE_INDEX).sum()))}
        return {"ce": (F.cross_entropy(out.float(), batch["labels"], reduction="sum"), len(out))}

    return loss_fn


def task_targets(task: str):
    """The trainer's targets: {part: number of examples (tagged words for ner) in a batch}."""
    if task in TASK_ARCH:
        return lambda batch: {"lm": (batch["labels"] != IGNORE_INDEX).sum()}
    if task == "ner":
        return lambda batch: {"ce": (batch["labels"] != IGNORE_INDEX).sum()}
    part = "mse" if task == "regression" else "ce"
    return lambda batch: {part: len(batch["labels"])}


def tagging_report(gold: list[list[str]], pred: list[list[str]], labels: list[str]) -> dict:
    """Per-word accuracy and macro F1 over the tags; for BIO tag sets also entity-level P/R/F1
    (then "f1" is the entity F1; else it is the per-word micro F1, the accuracy)."""
    index = {name: i for i, name in enumerate(labels)}
    flat_gold = [index[t] for s in gold for t in s]
    flat_pred = [index[t] for s in pred for t in s]
    words = classification_report(flat_gold, flat_pred, labels)
    report = {"accuracy": words["accuracy"], "macro_f1": words["macro_f1"], "per_tag_f1": words["per_class_f1"]}
    if is_bio(labels):
        entities = entity_report(gold, pred)
        report.update(precision=entities["precision"], recall=entities["recall"], f1=entities["f1"],
                      per_type_f1=entities["per_type_f1"], entities=entities["entities"])
    else:
        report.update(precision=words["micro_precision"], recall=words["micro_recall"], f1=words["micro_f1"])
    return report


def evaluate_task(task: str, model, data, labels: list[str] | None = None, device="cpu") -> dict:
    if task in TASK_ARCH:
        return evaluate_text_task(model, data, device)
    if task == "ner":
        pred = [[labels[t] for t in s] for s in predict_tags(model, data, device)]
        return tagging_report([s.tags for s in data.sentences], pred, labels)
    out = predict(model, data, device)
    gold = np.asarray(data.labels)
    if task == "regression":
        return {"mse": float(((out - gold) ** 2).mean()), "pearson": pearson(out, gold), "spearman": spearman(out, gold)}
    report = classification_report(gold, out.argmax(-1), labels)
    return report
