"""A task model's outputs over a task's batches, in the data's order: class logits, values, word tags.
Fine-tuning evaluates with them and `infer.py predict` answers with them."""

from __future__ import annotations

import numpy as np
import torch

from minilm.data.tagging import word_predictions


def forward_task(model, batch):
    """The task model's output for a batch: (B, L) logits, (B,) values or (B, T, L) tag logits. An encoder
    also reads the segment ids of text pairs."""
    if model.config.arch == "encoder":
        return model(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    return model(batch["input_ids"], batch["attention_mask"])


@torch.no_grad()
def predict(model, data, device="cpu") -> np.ndarray:
    """Logits (N, L) for classification, values (N,) for regression, in the data's order."""
    model.eval()
    outs, order = [], []
    for index, batch in data.by_length():
        batch = {k: v.to(device) for k, v in batch.items()}
        outs.append(forward_task(model, batch).float().cpu())
        order.extend(index)
    out = torch.cat(outs)
    restored = torch.empty_like(out)
    restored[torch.as_tensor(order)] = out  # back to the data's order
    return restored.numpy()


@torch.no_grad()
def predict_tags(model, data, device="cpu") -> list[list[int]]:
    """Tag ids per word of every sentence of a TaggingData, in its order."""
    model.eval()
    tags = [None] * len(data)
    for index, batch in data.by_length():
        logits = forward_task(model, {k: v.to(device) for k, v in batch.items()}).float().cpu()  # (B, T, L)
        for row, i in enumerate(index):
            tags[i] = word_predictions(logits[row], data.word_index[i], len(data.sentences[i].words))
    return tags
