"""Pretraining objectives: input corruption and the losses, as pure functions of tensors.

Notation: B batch, T time, V vocabulary. Positions whose label is IGNORE_INDEX take no part in
any loss; it is defined here and nowhere else.

    MLM   (BERT, Devlin et al. 2019, 3.1): choose 15% of the non-special tokens; of those, 80% become
          [MASK], 10% a random token, 10% stay; predict the originals.  L = -mean log p(x_i | x_masked)
    NSP   (BERT 3.1): is segment B the real continuation of A?  L = -mean log p(IsNext | A, B)
    CLM   (GPT): L = -mean_t log p(x_{t+1} | x_<=t)
    RTD   (ELECTRA, Clark et al. 2020): was token t replaced?  L = mean_t BCE(D(x, t), y_t)  (minilm/training/electra.py)
    Span corruption (T5, Raffel et al. 2020, 3.1.4): replace 15% of tokens, in spans of mean
          length 3, by sentinels; the decoder writes each sentinel followed by the span it hid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def cross_entropy_sum(logits, labels):
    """Summed token cross-entropy and the number of counted targets.

    logits (..., V), labels (...) with IGNORE_INDEX where nothing is predicted. Summing here and
    dividing once by the total count of targets keeps gradient accumulation exact."""
    logits = logits.reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 upcast, fp64 kept
    loss = F.cross_entropy(logits, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, count_targets(labels)


def binary_cross_entropy_sum(logits, targets):
    """Summed binary cross-entropy and the number of targets: logits z (N,), targets y (N,) in {0, 1},

        sum_i -[y_i log sigmoid(z_i) + (1 - y_i) log(1 - sigmoid(z_i))]

    (ELECTRA's replaced-token detection, minilm/training/electra.py)."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.binary_cross_entropy_with_logits(z, targets.to(z.dtype), reduction="sum"), targets.numel()


def count_targets(labels: torch.Tensor) -> int:
    """How many targets a label tensor holds: positions not equal to IGNORE_INDEX for class ids,
    every value for regression targets."""
    if labels.is_floating_point():
        return labels.numel()
    return int((labels != IGNORE_INDEX).sum())


def mask_tokens(input_ids, special_ids, mask_id: int, vocab_size: int, generator: torch.Generator, mask_prob: float = 0.15,
                word_starts=None):
    """BERT's masking. input_ids (B, T) -> (corrupted inputs (B, T), labels (B, T)).

    Each position is chosen with probability mask_prob (15%); of the chosen, 80% become [MASK],
    10% a random token and 10% stay. Special tokens ([CLS], [SEP], [PAD], ...) are never chosen.
    Labels hold the original token at the chosen positions and IGNORE_INDEX elsewhere.
    With word_starts (B, T) bool (True where a word begins: not a '##' continuation piece), whole
    words are chosen (BERT's whole-word masking): the draw at a word's first piece decides for all
    its pieces, the 80/10/10 split is still per piece."""
    labels = input_ids.clone()
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for i in special_ids:
        special |= input_ids == i
    draw = torch.rand(input_ids.shape, generator=generator)
    if word_starts is not None:
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        first_piece = torch.cummax(torch.where(word_starts | special, positions, 0), dim=1).values  # (B, T)
        draw = draw.gather(1, first_piece)
    chosen = (draw < mask_prob) & ~special
    labels[~chosen] = IGNORE_INDEX
    inputs = input_ids.clone()
    action = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (action < 0.8)] = mask_id  # 80%: [MASK]
    randomise = chosen & (action >= 0.8) & (action < 0.9)  # 10%: a random token; the last 10% stay
    inputs[randomise] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomise]
    return inputs, labels


def random_spans_noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span: float = 3.0):
    """T5's noise mask: a boolean (length,) with round(length * density) noisy positions in
    round(noise / mean_span) spans, the span and gap lengths drawn as random partitions."""
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = max(int(round(n_noise / mean_span)), 1)
    n_keep = length - n_noise

    def partition(total, parts):  # `parts` positive integers summing to `total`
        cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], dtype=int)
        return np.diff(np.concatenate([[0], cuts, [total]]))

    n_spans = min(n_spans, n_noise, n_keep)
    noise_lengths, keep_lengths = partition(n_noise, n_spans), partition(n_keep, n_spans)
    mask = np.zeros(length, dtype=bool)
    pos = 0
    for keep, noise in zip(keep_lengths, noise_lengths):  # keep, noise, keep, noise, ...
        pos += keep
        mask[pos : pos + noise] = True
        pos += noise
    return mask


def span_corrupt(tokens, sentinel_ids, eos_id: int, rng: np.random.Generator, noise_density=0.15, mean_span=3.0):
    """One sequence -> (encoder input ids, decoder target ids), both ending in [EOS].

    "Thank you for inviting me" -> input "Thank [X0] inviting [X1]", target "[X0] you for [X1] me"."""
    tokens = np.asarray(tokens)
    mask = random_spans_noise_mask(len(tokens), rng, noise_density, mean_span)
    source, target, span = [], [], -1
    for i, tok in enumerate(tokens):
        if mask[i]:
            if i == 0 or not mask[i - 1]:
                span += 1
                sentinel = sentinel_ids[span % len(sentinel_ids)]
                source.append(sentinel)
                target.append(sentinel)
            target.append(int(tok))
        else:
            source.append(int(tok))
    return source + [eos_id], target + [eos_id]
