"""The network: everything between token ids and logits, and nothing about files, tokenizers or training.

    embeddings.py   token, position (learned, sinusoidal, RoPE, ALiBi) and segment embeddings
    attention.py    multi-head attention (causal, padding, cross; grouped KV heads; windows), the KV cache
    mlp.py          the feed-forward block (GELU, ReLU, SwiGLU); moe.py: a mixture of experts in its place
    norms.py        LayerNorm and RMSNorm; dropout.py: dropout that costs nothing at p = 0
    blocks.py       the Transformer block and the stack of them
    heads.py        what reads the last hidden states: MLM, LM, classification, regression, tagging
    families.py     the three models built from those blocks: Encoder, Decoder, EncoderDecoder
    registry.py     the named choices of a ModelConfig, and the decorator that adds one from your own file

May import: minilm.config and the leaves below it (minilm.objectives for the heads' losses), and
kernels/ (the fused paths an implementation choice selects). `tests/test_imports.py` keeps it so.
"""
