"""GPT-2 (Radford et al. 2019) <-> minilm's Decoder: the name map and the config map, both ways.

GPT-2 is minilm's decoder as it comes: pre-norm blocks, a final norm, learned positions, the tanh
GELU ("gelu_new") and an LM head tied to the token embedding. Two storage differences:

    Conv1D     GPT-2's linear layers keep their matrix as (in, out), an nn.Linear's transposed;
    c_attn     one fused (C, 3C) projection holds W^Q, W^K and W^V side by side: minilm's
               q_proj, k_proj and v_proj are its three slices.

    GPT2Model          head "none"
    GPT2LMHeadModel    head "lm"
"""

from __future__ import annotations

from minilm.config import ModelConfig
from minilm.interop.mapping import PLAIN_VARIANTS, CONV1D, Table, ff_size, fused, require, unsupported

MODEL_TYPE = "gpt2"
BASE_PREFIX = "transformer."

# minilm                                          Hugging Face (inside GPT2Model)     how
BACKBONE = Table([
    ("transformer.embed.token",                    "wte"),
    ("transformer.embed.position",                 "wpe"),
    ("transformer.blocks.{i}.attn_norm",           "h.{i}.ln_1"),
    ("transformer.blocks.{i}.attn.q_proj",         "h.{i}.attn.c_attn",                fused(0)),
    ("transformer.blocks.{i}.attn.k_proj",         "h.{i}.attn.c_attn",                fused(1)),
    ("transformer.blocks.{i}.attn.v_proj",         "h.{i}.attn.c_attn",                fused(2)),
    ("transformer.blocks.{i}.attn.o_proj",         "h.{i}.attn.c_proj",                CONV1D),
    ("transformer.blocks.{i}.mlp_norm",            "h.{i}.ln_2"),
    ("transformer.blocks.{i}.mlp.fc1",             "h.{i}.mlp.c_fc",                   CONV1D),
    ("transformer.blocks.{i}.mlp.fc2",             "h.{i}.mlp.c_proj",                 CONV1D),
    ("transformer.norm",                           "ln_f"),
])

# minilm                                          Hugging Face (beside the backbone)
HEADS = Table([
    ("lm_head.weight",                             "lm_head.weight"),  # when untied
])

# Buffers of older GPT-2 checkpoints (the causal mask), not weights.
IGNORED = (r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias")
DROPPED_UNLESS_USED = ()

# transformers' weight ties, target -> source (how they load: _resolve_ties in minilm/interop/__init__.py)
TIES = {"lm_head.weight": "wte.weight"}
UNTIED_OWN_RULE = ("lm_head.weight",)

ARCHITECTURES = {"GPT2Model": "none", "GPT2LMHeadModel": "lm"}
DEFAULT_ARCHITECTURE = "GPT2LMHeadModel"
HAS_BASE_PREFIX = {"GPT2Model": False}

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def config_to_minilm(hf: dict, architecture: str, source: str) -> ModelConfig:
    if not hf.get("scale_attn_weights", True):
        unsupported(source, "scale_attn_weights", False, "minilm always scales scores by 1/sqrt(hs)")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported(source, "scale_attn_by_inverse_layer_idx", True, "minilm scales every layer alike")
    if hf.get("add_cross_attention", False):
        unsupported(source, "add_cross_attention", True, "a GPT-2 decoder has no encoder")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        unsupported(source, "activation_function", act, f"expected one of {', '.join(ACTIVATIONS)}")
    n_embd = hf.get("n_embd", 768)
    return ModelConfig.from_dict(
        dict(
            arch="decoder",
            head=ARCHITECTURES[architecture],
            vocab_size=hf.get("vocab_size", 50257),
            n_layer=hf.get("n_layer", 12),
            n_head=hf.get("n_head", 12),
            n_embd=n_embd,
            d_ff=ff_size(hf.get("n_inner"), n_embd),
            max_seq_len=hf.get("n_positions", 1024),
            pos="learned",
            n_segment=0,
            norm="layernorm",
            norm_position="pre",
            embed_norm=False,
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            mlp=ACTIVATIONS[act],
            bias=True,
            dropout=hf.get("resid_pdrop", 0.1),  # minilm has one rate for embd_pdrop and resid_pdrop
            attn_dropout=hf.get("attn_pdrop", 0.1),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            init_std=hf.get("initializer_range", 0.02),
        ),
        source=source,
    )


def config_to_hf(config: ModelConfig, tokenizer=None) -> tuple[dict, str]:
    """(config.json fields, architecture) of a minilm decoder; ValueError for what GPT-2 cannot hold."""
    require(config, "GPT-2", **PLAIN_VARIANTS, norm="layernorm", norm_position="pre", embed_norm=False, pos="learned", bias=True,
            n_segment=0, pos_offset=0, scale_embedding=False, lm_head_bias=False)
    if config.mlp not in ("gelu", "gelu_tanh", "relu"):
        require(config, "GPT-2", mlp="gelu_tanh")
    if config.head not in ("none", "lm"):
        raise ValueError(f"ModelConfig.head={config.head!r}: a GPT-2 checkpoint holds the 'none' or 'lm' head")
    architecture = {"none": "GPT2Model", "lm": "GPT2LMHeadModel"}[config.head]
    eos = tokenizer.eos_id if tokenizer is not None else None
    hf = dict(
        architectures=[architecture],
        model_type=MODEL_TYPE,
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.d_ff,
        activation_function={"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[config.mlp],
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.attn_dropout,
        layer_norm_epsilon=config.norm_eps,
        initializer_range=config.init_std,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=tokenizer.bos_id if tokenizer is not None else None,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_id if tokenizer is not None else None,
    )
    return hf, architecture
