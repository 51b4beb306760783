"""Transformer blocks and the stack that runs them: embeddings -> N blocks -> final norm.

Notation: B batch, T time, S key/memory time, C channels (n_embd).

Pre-norm (GPT-2, and our default):          Post-norm (the original Transformer, BERT, BART):
    x = x + SelfAttn(LN(x))                      x = LN(x + SelfAttn(x))
    x = x + CrossAttn(LN(x), memory)             x = LN(x + CrossAttn(x, memory))
    x = x + FFN(LN(x))                           x = LN(x + FFN(x))
    ... and one LN after the last block

Weight sharing across layers (`share_layers`; ALBERT, Lan et al. 2020): one block's parameters
serve all n_layer layers, applied n_layer times (the KV cache still keeps one entry per layer).

Parallel blocks (`parallel_block`; GPT-J, PaLM: Chowdhery et al. 2022, section 2) feed attention and
the MLP the same normalised input and add both to the residual at once, x = x + Attn(LN(x)) +
FFN(LN(x)): one norm fewer, and the two matmul groups no longer wait for each other (pre-norm,
decoder or encoder, no cross-attention).

An encoder block is a non-causal block; a decoder block is causal, with cross-attention when it
sits in an encoder-decoder model. The three model families (minilm/model/families.py) are this one stack
with those two switches.
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from minilm.model.attention import KVCache, MultiHeadAttention, attention_bias
from minilm.model.embeddings import Embeddings, Rotary
from minilm.model.mlp import make_mlp
from minilm.model.norms import make_norm
from minilm.model.registry import lookup


class Block(nn.Module):
    def __init__(self, config, causal: bool, cross: bool, layer: int):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn_norm = make_norm(config)
        self.attn = MultiHeadAttention(config, causal=causal, layer=layer)
        self.cross_norm = make_norm(config) if cross else None
        self.cross_attn = MultiHeadAttention(config, cross=True, layer=layer) if cross else None
        self.parallel = config.parallel_block
        self.mlp_norm = None if self.parallel else make_norm(config)  # parallel: the MLP reads attn_norm's output
        self.mlp = make_mlp(config, layer)

    def forward(self, x, bias=None, rope=None, memory=None, memory_bias=None, cache=None, layer=None, keep=None):
        """x (B, T, C), memory (B, S, C) -> (B, T, C). layer: this call's place in the stack (the KV
        cache's entry), when the block serves every layer (share_layers). keep: the outputs at the
        first `keep` positions only, (B, keep, C), attending over every position as before: after
        attention each position's path is its own, so the rest are never computed."""
        first = x if keep is None else x[:, :keep]  # (B, T or keep, C): the rows this call returns
        if self.parallel:
            h = self.attn_norm(x)
            return first + self.attn(h, bias, rope=rope, cache=cache, layer=layer, keep=keep) + self.mlp(h if keep is None else h[:, :keep])
        if self.pre_norm:
            x = first + self.attn(self.attn_norm(x), bias, rope=rope, cache=cache, layer=layer, keep=keep)
            if self.cross_attn is not None:
                x = x + self.cross_attn(self.cross_norm(x), memory_bias, memory=memory, cache=cache, layer=layer)
            return x + self.mlp(self.mlp_norm(x))
        x = self.attn_norm(first + self.attn(x, bias, rope=rope, cache=cache, layer=layer, keep=keep))
        if self.cross_attn is not None:
            x = self.cross_norm(x + self.cross_attn(x, memory_bias, memory=memory, cache=cache, layer=layer))
        return self.mlp_norm(x + self.mlp(x))


class Transformer(nn.Module):
    """Embeddings, `n_layer` blocks and (pre-norm) a final norm; returns hidden states (B, T, C).

    With `grad_checkpointing` on, training keeps only each block's input and recomputes the block's
    activations during backward (Chen et al. 2016): memory per block falls from O(activations) to
    O(B T C) for one extra forward pass; dropout masks are replayed, so gradients are unchanged.
    """

    def __init__(self, config, n_layer: int, causal: bool, cross: bool = False):
        super().__init__()
        self.config, self.causal = config, causal
        self.embed = Embeddings(config)
        self.rotary = Rotary(config.head_size, config.rope_theta) if config.pos == "rope" else None
        if config.share_layers:  # ALBERT: one block's weights serve every layer
            self.blocks = nn.ModuleList([Block(config, causal, cross, layer=0)] * n_layer)
        else:
            self.blocks = nn.ModuleList(Block(config, causal, cross, layer=i) for i in range(n_layer))
        self.norm = make_norm(config) if config.norm_position == "pre" else None
        self.grad_checkpointing = False
        self.prefix = None  # trainable virtual keys and values (minilm/peft/prefix.py), or None

    def forward(
        self,
        input_ids,
        attention_mask=None,
        segment_ids=None,
        position_ids=None,
        memory=None,
        memory_mask=None,
        cache: KVCache | None = None,
        keep: int | None = None,
    ):
        """input_ids (B, T) -> hidden states (B, T, C).

        attention_mask (B, S): 1 for real tokens, 0 for padding, over all S = past + T positions
        when a cache holds `past` positions. position_ids (B, T) default to past .. past + T - 1.
        memory (B, S_enc, C) and memory_mask (B, S_enc): the encoder output, for cross-attention.
        keep (bidirectional stacks only): the last block computes the first `keep` positions alone
        -> (B, keep, C), equal to the full output's first `keep` rows: a head that reads the [CLS]
        state alone saves the last block's work at every other position.
        """
        if keep is not None and self.causal:
            raise ValueError("keep: only a bidirectional stack computes its first positions apart (a causal one would "
                             "need each kept query's own mask)")
        B, T = input_ids.shape
        P = 0  # virtual prefix positions, which the caller's attention_mask and positions leave out
        if self.prefix is not None:
            cache = cache if cache is not None else KVCache()
            if cache.length == 0:
                self.prefix.fill(cache, B)
            P = self.prefix.length
        past = cache.length if cache is not None else 0
        S = past + T
        if position_ids is None:
            position_ids = torch.arange(past - P, S - P, device=input_ids.device)  # (T,)
        if P:
            mask = attention_mask if attention_mask is not None else torch.ones(B, S - P, dtype=torch.long, device=input_ids.device)
            attention_mask = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=mask.device), mask], dim=1)  # (B, S)
        if self.config.position_limit is not None and S - P > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {S - P} positions is longer than max_seq_len={self.config.max_seq_len} of this model"
            )
        x = self.embed(input_ids, position_ids, segment_ids)  # (B, T, C)
        # SDPA applies a plain causal mask itself (is_causal), so it needs no bias tensor then (minilm/model/registry.py)
        handles_causal = getattr(lookup("attention", self.config.attn_impl), "handles_causal", False)
        window, scores = self.config.attn_window, getattr(getattr(self.embed, "position", None), "score_bias", None)  # ALiBi: a bias on the scores
        implicit_causal = handles_causal and attention_mask is None and past == 0 and (window is None or S <= window) and scores is None
        bias = None if implicit_causal else attention_bias(attention_mask, T, S, self.causal, x.dtype, x.device, window)
        if scores is not None:
            penalty = scores(T, S, x.dtype)  # (1, nh, T, S)
            bias = penalty if bias is None else bias + penalty  # masked entries stay near the dtype's minimum
        memory_bias = None
        if memory is not None and memory_mask is not None:
            memory_bias = attention_bias(memory_mask, T, memory.shape[1], False, x.dtype, x.device)
        rope = self.rotary.angles(position_ids) if self.rotary is not None else None
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.blocks):
            last = keep if i == len(self.blocks) - 1 else None  # (B, keep, C) out of the last block, when asked
            if recompute:
                x = checkpoint(block, x, bias, rope=rope, memory=memory, memory_bias=memory_bias, keep=last, use_reentrant=False)
            else:
                x = block(x, bias, rope=rope, memory=memory, memory_bias=memory_bias, cache=cache, layer=i, keep=last)
        return self.norm(x) if self.norm is not None else x
