"""A task model's outputs over a task's batches, in the data's order: class logits, values, word tags.
Fine-tuning evaluates with them and `infer.py predict` answers with them."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from minilm.data.tagging import word_predictions


def forward_task(model, batch):
    """The task model's output for a batch: (B, L) logits, (B,) values or (B, T, L) tag logits. An encoder
    also reads the segment ids of text pairs; a bi-encoder (pair_encoding "bi") reads the pair's two
    texts as separate rows of one forward (`stack_pairs`)."""
    if getattr(model.config, "prompt", ""):  # prompt-based fine-tuning: the MLM head at the template's [MASK]
        return prompt_logits(model, batch)
    if getattr(model, "bi", False):  # an Encoder whose cls / regression head compares two texts
        return model(*stack_pairs(batch))
    if model.config.arch == "encoder":
        return model(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
    return model(batch["input_ids"], batch["attention_mask"])


def prompt_logits(model, batch):
    """LM-BFF (Gao et al. 2021): the text inside a template, "{text} It was [MASK].", and the logit of
    label y is the MLM head's score of y's word v(y) at the [MASK]:

        z_y = MLM(h_mask)[v(y)],   p(y | x) = softmax_y(z)   (B, L)

    so fine-tuning trains the pretrained MLM head instead of a new classifier."""
    h = model.hidden(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))  # (B, T, C)
    at_mask = h[torch.arange(h.shape[0], device=h.device), batch["mask_positions"]]  # (B, C)
    return model.mlm(at_mask)[:, model.config.verbalizer_ids]  # (B, V) -> (B, L)


def stack_pairs(batch):
    """A batch of B text pairs, the first texts (B, Ta) and the second (B, Tb) each padded on its own, as
    one (2B, T) batch, T = max(Ta, Tb): rows 0..B-1 the first texts, rows B..2B-1 the second."""
    if "pair_input_ids" not in batch:
        raise ValueError("this model compares text pairs (pair_encoding 'bi'): every input needs a second text "
                         "(--text-pair-col when fine-tuning, --pair or \"pair\" when predicting)")
    a, b = batch["input_ids"], batch["pair_input_ids"]
    T = max(a.shape[1], b.shape[1])

    def widen(x):  # (B, t) -> (B, T); the new columns are padding (mask 0)
        return torch.nn.functional.pad(x, (0, T - x.shape[1]))

    ids = torch.cat([widen(a), widen(b)])  # (2B, T)
    mask = torch.cat([widen(batch["attention_mask"]), widen(batch["pair_attention_mask"])])  # (2B, T)
    return ids, mask


def batches_by_length(data, progress: str | None = None):
    """data.by_length(), behind a progress bar named `progress` (none when it is None)."""
    if progress is None:
        return data.by_length()
    return tqdm(data.by_length(), total=math.ceil(len(data) / data.batch_size), desc=progress, unit="batch", leave=False)


@torch.no_grad()
def predict(model, data, device="cpu", progress: str | None = None) -> np.ndarray:
    """Logits (N, L) for classification, values (N,) for regression, in the data's order
    (`progress`: the name of a progress bar over the batches)."""
    model.eval()
    outs, order = [], []
    for index, batch in batches_by_length(data, progress):
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
