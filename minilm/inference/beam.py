"""Beam search: keep the K most probable partial outputs instead of one.

Notation: B batch, K beams (num_beams), V vocabulary, t tokens generated so far.

Every step extends each of the K running hypotheses of a row by every token and keeps the best
K of the K * V extensions by their summed log-probability

    score(y_1..y_t) = sum_i log p(y_i | x, y_<i)

(Graves 2012; Sutskever et al. 2014). A hypothesis that ends in EOS, or reaches max_new_tokens,
is finished and ranked by its length-normalised score

    score / t ** length_penalty

(length_penalty > 0 favours longer outputs, < 0 shorter; Wu et al. 2016 use a similar penalty).
The K best finished hypotheses are kept; the best of them is the answer.

This follows `transformers`' beam search step for step, so that the two give the same tokens:
  - 2K candidates are drawn per step, so that K running hypotheses remain even when the best K
    all end in EOS; a candidate that ends among the best K enters the finished pool;
  - a row stops once its K finished slots are full and its best running score, normalised by the
    current length, falls below its worst finished one (with early_stopping=True: as soon as the
    K slots are full);
  - the repetition penalty is applied to the log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minilm.inference.generate import Stepper, apply_repetition_penalty, decoding

NEG = -1.0e9  # the score of an impossible hypothesis


@decoding
def beam_search(
    model,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 50,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    repetition_penalty: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    decoder_start_id: int | None = None,
):
    """The best hypothesis per row, as new tokens (B, N) padded with pad_id after EOS."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        return torch.zeros((input_ids.shape[0], 0), dtype=torch.long, device=input_ids.device)
    model.eval()
    B, K, device = input_ids.shape[0], num_beams, input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    # every row becomes K rows (b0 beam 0, b0 beam 1, ..., b1 beam 0, ...): (B * K, T)
    stepper = Stepper(model, input_ids.repeat_interleave(K, 0), attention_mask.repeat_interleave(K, 0),
                      max_new_tokens, decoder_start_id, keep_history=repetition_penalty != 1.0)
    logits = stepper.first()  # (B * K, V)
    V = logits.shape[-1]
    if 2 * K > V:
        raise ValueError(f"num_beams={K} needs a vocabulary of at least {2 * K} tokens, the model has {V}")
    running = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (B, K, t) tokens of the live hypotheses
    running_scores = torch.full((B, K), NEG, device=device)
    running_scores[:, 0] = 0.0  # the K copies are identical: start from one, or every beam would pick the same tokens
    finished = torch.full((B, K, max_new_tokens), pad_id, dtype=torch.long, device=device)  # the finished pool
    finished_scores = torch.full((B, K), NEG, device=device)
    finished_full = torch.zeros(B, K, dtype=torch.bool, device=device)  # which pool slots hold a hypothesis
    open_rows = torch.ones(B, 1, dtype=torch.bool, device=device)  # rows whose pool may still improve
    best_first = torch.arange(2 * K, device=device) < K  # (2K,) the top K ranks of the candidates

    for step in range(max_new_tokens):
        t = step + 1  # length of the hypotheses this step makes
        log_probs = F.log_softmax(logits.float(), dim=-1)
        log_probs = apply_repetition_penalty(log_probs, stepper.history, repetition_penalty, stepper.counted)  # (B * K, V)
        total = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        cand_scores, cand = torch.topk(total, 2 * K, dim=-1)  # (B, 2K) the best extensions of any beam
        cand_beam, cand_token = cand // V, cand % V  # which beam each extends, by which token
        cand_tokens = torch.cat([running.gather(1, cand_beam[:, :, None].expand(-1, -1, step)), cand_token[:, :, None]], 2)
        ends = torch.full_like(cand_token, t == max_new_tokens, dtype=torch.bool)  # (B, 2K)
        if eos_id is not None:
            ends |= cand_token == eos_id

        # live: the best K candidates that did not end
        live = torch.topk(cand_scores + ends.float() * NEG, K, dim=-1).indices  # (B, K)
        running, running_scores = cand_tokens.gather(1, live[:, :, None].expand(-1, -1, t)), cand_scores.gather(1, live)
        live_beam = cand_beam.gather(1, live)  # (B, K)

        # finished: candidates among the best K that ended, length-normalised, merged into the pool
        entering = ends & best_first & open_rows  # (B, 2K)
        if early_stopping:
            entering &= ~finished_full.all(-1, keepdim=True)
        normalised = torch.where(entering, cand_scores / t**length_penalty, torch.full_like(cand_scores, NEG))
        padded = F.pad(cand_tokens, (0, max_new_tokens - t), value=pad_id)  # (B, 2K, max_new_tokens)
        pool_tokens, pool_scores = torch.cat([finished, padded], 1), torch.cat([finished_scores, normalised], 1)
        keep = torch.topk(pool_scores, K, dim=-1).indices  # (B, K)
        finished = pool_tokens.gather(1, keep[:, :, None].expand(-1, -1, max_new_tokens))
        finished_scores = pool_scores.gather(1, keep)
        finished_full = torch.cat([finished_full, entering], 1).gather(1, keep)

        if t == max_new_tokens:
            break
        # can a row's pool still improve? (its best live score at the current length vs its worst finished)
        worst = torch.where(finished_full, finished_scores.min(-1, keepdim=True).values, torch.full_like(finished_scores, NEG))
        open_rows &= (running_scores[:, :1] / t**length_penalty > worst).any(-1, keepdim=True)
        if not bool(open_rows.any()) or (early_stopping and bool(finished_full.all())):
            break
        rows = (torch.arange(B, device=device)[:, None] * K + live_beam).view(-1)  # (B * K,) rows of the stepper to keep
        stepper.reorder(rows)
        logits = stepper.next(running[:, :, -1].reshape(-1))

    best = finished[:, 0]  # (B, max_new_tokens): the pool is sorted best first; pads follow an EOS
    n = max((row.index(eos_id) + 1 if eos_id in row else max_new_tokens) for row in best.tolist())
    return best[:, :n]
