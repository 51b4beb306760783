"""Decoding: greedy search and sampling (temperature, top-k, top-p) with a KV cache.

Notation: B batch, T prompt time, V vocabulary.

Each step feeds only the newest token; the keys and values of earlier positions come from the
cache (minilm/model/attention.py), so a step costs O(T) attention instead of recomputing O(T^2).
Prompts of different lengths are left-padded: the attention mask hides the pads and the position
of each real token counts from that row's first real token.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from kernels.packed_linear import packed_linears
from minilm.data.pretrain import pad
from minilm.model.attention import KVCache


def apply_repetition_penalty(logits, generated, penalty: float, counted=None):
    """CTRL's penalty (Keskar et al. 2019): scores of tokens already present are divided by
    `penalty` when positive and multiplied by it when negative. logits (B, V), generated (B, T);
    counted (B, T), optional, is 0 where `generated` holds padding, which is not present (so a row
    is penalised alike alone and in a left-padded batch, as in transformers)."""
    if penalty == 1.0 or generated.numel() == 0:
        return logits
    V = logits.shape[-1]
    if counted is not None:  # padding points at an extra column, dropped at the end
        generated, logits = generated.masked_fill(counted == 0, V), F.pad(logits, (0, 1))
    seen = torch.gather(logits, 1, generated)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, generated, seen)[:, :V]


def filter_logits(logits, top_k: int | None = None, top_p: float | None = None):
    """Keep the k most likely tokens (top-k, Fan et al. 2018) and/or the smallest set whose
    probability reaches p (nucleus, Holtzman et al. 2020); the rest get -inf. logits (B, V)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # the mass before a token already reaches p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def next_token(logits, greedy=False, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token per row from the last-position logits (B, V) -> (B,)."""
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def left_pad(prompts, pad_id: int):
    """Lists of ids -> input_ids (B, T) padded on the left, attention_mask (B, T)."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, T - len(p) :] = torch.as_tensor(p)
            mask[i, T - len(p) :] = 1
    return ids, mask


def pad_prompts(prompts, pad_id: int, encoder_decoder: bool):
    """input_ids (B, T) and attention_mask (B, T) of prompts of different lengths: left-padded for
    a decoder, whose new tokens follow each row's last real token; right-padded for an
    encoder-decoder's sources, whose encoder counts positions from the first token."""
    if not encoder_decoder:
        return left_pad(prompts, pad_id)
    return pad(prompts, pad_id), pad([[1] * len(p) for p in prompts], 0, max(len(p) for p in prompts))


def until_eos(tokens: list[int], eos_id) -> list[int]:
    """A row of generated ids up to, not including, its first EOS."""
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def decoding(fn):
    """Run `fn(model, ...)` under torch.inference_mode, which skips autograd's bookkeeping altogether
    (about 10% faster per step than no_grad for a small model), with the model's Linear weights
    prepacked for oneDNN on CPU (kernels/packed_linear.py: a decoding step is bound by reading the
    weights, which the packed layout reads about twice as fast), and return its tokens as an
    ordinary tensor, so that they may later feed a forward pass that autograd records."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with torch.inference_mode(), packed_linears(model):
            out = fn(model, *args, **kwargs)
        return out.clone()

    return wrapper


class Stepper:
    """Feeds a model one new token per row per step, over a KV cache.

    Decoder: input_ids (B, T) is the left-padded prompt; the position of each real token counts
    from that row's first real token. Encoder-decoder: input_ids is the source, encoded once (its
    cross-attention keys and values are projected at the first step and cached); the target starts
    from `decoder_start_id`. `history` (B, t) holds every token fed so far (the repetition penalty's
    "already present" set: the prompt for a decoder, the start token for an encoder-decoder); with
    keep_history=False it stays the prompt (no repetition penalty needs more).
    """

    def __init__(self, model, input_ids, attention_mask, max_new_tokens: int, decoder_start_id=None, keep_history=True):
        self.model, self.keep_history = model, keep_history
        self.encoder_decoder = model.config.arch == "encoder-decoder"
        prefix = (model.decoder if self.encoder_decoder else model.transformer).prefix
        fed = (1 if self.encoder_decoder else input_ids.shape[1]) + max_new_tokens  # the most positions ever cached
        self.cache = KVCache(capacity=fed + (prefix.length if prefix is not None else 0))
        padded = attention_mask is not None and not bool(attention_mask.all())
        self.mask = attention_mask if padded else None  # None: no padding, so no mask to build at each step
        limit = model.config.position_limit
        if self.encoder_decoder:
            if limit is not None and max_new_tokens > limit:  # the start token and all but the last new token are fed
                raise ValueError(f"max_new_tokens ({max_new_tokens}) exceeds the model's max_seq_len={limit}")
            if decoder_start_id is None:
                raise ValueError("an encoder-decoder needs decoder_start_id (the token its target starts from)")
            self.memory = model.encode(input_ids, self.mask)  # (B, S, C)
            self.history = torch.full((input_ids.shape[0], 1), decoder_start_id, dtype=torch.long, device=input_ids.device)
        else:
            if limit is not None and input_ids.shape[1] + max_new_tokens - 1 > limit:  # the last new token is never fed
                raise ValueError(
                    f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                    f"max_seq_len={limit}"
                )
            self.history = input_ids
            if padded:
                self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): left pads do not count
            else:
                self.positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)  # (B, T)

    @property
    def counted(self):
        """(B, t): 0 where `history` holds a left pad, else 1; None when no row is padded."""
        if self.encoder_decoder or self.mask is None:
            return None
        return self.mask[:, : self.history.shape[1]]

    def first(self):
        """Logits (B, V) for the first new token."""
        if self.encoder_decoder:
            return self.model.decode(self.history, self.memory, self.mask, cache=self.cache)[:, -1]
        h = self.model.hidden(self.history, self.mask, self.positions, cache=self.cache)  # (B, T, C)
        return self.model.head_logits(h[:, -1:])[:, -1]  # the head at the last position only

    def next(self, token):
        """Feed token (B,); logits (B, V) for the token after it."""
        if self.keep_history:
            self.history = torch.cat([self.history, token[:, None]], dim=1)
        if self.encoder_decoder:
            return self.model.decode(token[:, None], self.memory, self.mask, cache=self.cache)[:, -1]
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones_like(token[:, None])], dim=1)
        self.positions = self.positions[:, -1:] + 1  # (B, 1)
        return self.model(token[:, None], self.mask, self.positions, cache=self.cache)[:, -1]

    def reorder(self, index):
        """Keep rows `index` (B',) of every piece of state (beam search)."""
        self.cache.reorder(index)
        self.history = self.history[index]
        if self.mask is not None:
            self.mask = self.mask[index]
        if self.encoder_decoder:
            self.memory = self.memory[index]
        else:
            self.positions = self.positions[index]


@decoding
def generate(
    model,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 50,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    decoder_start_id: int | None = None,
    generator: torch.Generator | None = None,
    on_step=None,
):
    """New tokens (B, N) after the prompts input_ids (B, T), N <= max_new_tokens.

    Decoder: continues each prompt. Encoder-decoder: input_ids are the source; the target starts
    from `decoder_start_id`. Rows that produced `eos_id` are padded with `pad_id` afterwards;
    decoding stops when every row has. `on_step(tokens (B,))` is called after each step (streaming);
    it may return a (B,) bool tensor of rows to finish now (a stop string appeared in them).
    """
    model.eval()
    B, device = input_ids.shape[0], input_ids.device
    stepper = Stepper(model, input_ids, attention_mask, max_new_tokens, decoder_start_id, keep_history=repetition_penalty != 1.0)
    logits = stepper.first()  # (B, V)
    new = []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    can_finish = eos_id is not None or on_step is not None  # else every row runs to max_new_tokens
    for step in range(max_new_tokens):
        logits = apply_repetition_penalty(logits, stepper.history, repetition_penalty, stepper.counted)
        token = next_token(logits, greedy, temperature, top_k, top_p, generator)  # (B,)
        if can_finish:
            token = token.masked_fill(done, pad_id)  # finished rows: padding
        new.append(token)
        if on_step is not None:
            finish = on_step(token)
            if finish is not None:
                done |= finish
        if eos_id is not None:
            done |= token == eos_id
        if step == max_new_tokens - 1 or (can_finish and bool(done.all())):
            break  # nothing more to predict: the last token is never fed back
        logits = stepper.next(token)
    return torch.stack(new, dim=1) if new else torch.zeros((B, 0), dtype=torch.long, device=device)
