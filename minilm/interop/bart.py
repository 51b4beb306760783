"""BART (Lewis et al. 2020) <-> minilm's EncoderDecoder: the name map and the config map, both ways.

BART is minilm's encoder-decoder with post-norm blocks, a norm after the embeddings of each stack
(layernorm_embedding -> `embed_norm`) and one token table shared by the encoder, the decoder and
the LM head. What minilm holds through small general config fields:

    learned positions from row 2     BART's position tables keep two unused rows first: pos_offset=2
                                     (the encoder and the decoder each have their own table)
    final_logits_bias                a bias on the LM head's scores: lm_head_bias=True
    scale_embedding                  token embeddings times sqrt(d_model): scale_embedding (False
                                     in the BART configs, True in mBART's)

    BartModel                        head "none"
    BartForConditionalGeneration     head "lm"

BART's encoder and decoder may differ in depth (n_layer, n_decoder_layer) but not in width, head
count or feed-forward size, which minilm shares between the two stacks.
"""

from __future__ import annotations

from minilm.config import ModelConfig
from minilm.interop.mapping import PLAIN_VARIANTS, ROW, Table, ff_size, require, unsupported

MODEL_TYPE = "bart"
BASE_PREFIX = "model."
POS_OFFSET = 2  # BartLearnedPositionalEmbedding.offset


def _stack(minilm: str, hf: str, cross: bool) -> list:
    """The rules of one stack's blocks (the decoder's add cross-attention)."""
    rules = [
        (f"{minilm}.blocks.{{i}}.attn.q_proj",            f"{hf}.layers.{{i}}.self_attn.q_proj"),
        (f"{minilm}.blocks.{{i}}.attn.k_proj",            f"{hf}.layers.{{i}}.self_attn.k_proj"),
        (f"{minilm}.blocks.{{i}}.attn.v_proj",            f"{hf}.layers.{{i}}.self_attn.v_proj"),
        (f"{minilm}.blocks.{{i}}.attn.o_proj",            f"{hf}.layers.{{i}}.self_attn.out_proj"),
        (f"{minilm}.blocks.{{i}}.attn_norm",              f"{hf}.layers.{{i}}.self_attn_layer_norm"),
        (f"{minilm}.blocks.{{i}}.mlp.fc1",                f"{hf}.layers.{{i}}.fc1"),
        (f"{minilm}.blocks.{{i}}.mlp.fc2",                f"{hf}.layers.{{i}}.fc2"),
        (f"{minilm}.blocks.{{i}}.mlp_norm",               f"{hf}.layers.{{i}}.final_layer_norm"),
    ]
    if cross:
        rules += [
            (f"{minilm}.blocks.{{i}}.cross_attn.q_proj",  f"{hf}.layers.{{i}}.encoder_attn.q_proj"),
            (f"{minilm}.blocks.{{i}}.cross_attn.k_proj",  f"{hf}.layers.{{i}}.encoder_attn.k_proj"),
            (f"{minilm}.blocks.{{i}}.cross_attn.v_proj",  f"{hf}.layers.{{i}}.encoder_attn.v_proj"),
            (f"{minilm}.blocks.{{i}}.cross_attn.o_proj",  f"{hf}.layers.{{i}}.encoder_attn.out_proj"),
            (f"{minilm}.blocks.{{i}}.cross_norm",         f"{hf}.layers.{{i}}.encoder_attn_layer_norm"),
        ]
    return rules


# minilm                                          Hugging Face (inside BartModel)
BACKBONE = Table([
    ("encoder.embed.token",                        "shared"),  # the decoder's and the LM head's too
    ("encoder.embed.position",                     "encoder.embed_positions"),
    ("encoder.embed.norm",                         "encoder.layernorm_embedding"),
    *_stack("encoder", "encoder", cross=False),
    ("decoder.embed.position",                     "decoder.embed_positions"),
    ("decoder.embed.norm",                         "decoder.layernorm_embedding"),
    *_stack("decoder", "decoder", cross=True),
])

# minilm                                          Hugging Face (beside the backbone)   how
HEADS = Table([
    ("lm_head.weight",                             "lm_head.weight"),  # when untied
    ("lm_head.bias",                               "final_logits_bias",                  ROW),
])

IGNORED = ()
DROPPED_UNLESS_USED = ()

# transformers' weight ties, target -> source (how they load: _resolve_ties in minilm/interop/__init__.py).
# Untied, the encoder's and the decoder's token tables are tensors of their own, which minilm
# accepts only when they are equal: its encoder and decoder share one table.
TIES = {
    "encoder.embed_tokens.weight": "shared.weight",
    "decoder.embed_tokens.weight": "shared.weight",
    "lm_head.weight": "shared.weight",
}
UNTIED_OWN_RULE = ("lm_head.weight",)

ARCHITECTURES = {"BartModel": "none", "BartForConditionalGeneration": "lm"}
DEFAULT_ARCHITECTURE = "BartForConditionalGeneration"
HAS_BASE_PREFIX = {"BartModel": False}

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def config_to_minilm(hf: dict, architecture: str, source: str) -> ModelConfig:
    def same(enc: str, dec: str, what: str):
        if hf.get(enc) != hf.get(dec):
            unsupported(source, dec, hf.get(dec), f"minilm's decoder has the encoder's {what} ({enc}={hf.get(enc)!r})")

    same("encoder_attention_heads", "decoder_attention_heads", "head count")
    same("encoder_ffn_dim", "decoder_ffn_dim", "feed-forward size")
    for field in ("normalize_before", "add_final_layer_norm"):  # mBART-style pre-norm
        if hf.get(field):
            unsupported(source, field, hf[field], "BART is post-norm")
    act = hf.get("activation_function", "gelu")
    if act not in ACTIVATIONS:
        unsupported(source, "activation_function", act, f"expected one of {', '.join(ACTIVATIONS)}")
    head = ARCHITECTURES[architecture]
    n_layer, n_decoder_layer = hf["encoder_layers"], hf["decoder_layers"]
    start = hf.get("decoder_start_token_id")  # BART's own: </s>, then the model writes <s>
    return ModelConfig.from_dict(
        dict(
            arch="encoder-decoder",
            head=head,
            vocab_size=hf["vocab_size"],
            n_layer=n_layer,
            n_decoder_layer=n_decoder_layer if n_decoder_layer != n_layer else None,
            decoder_start_id=None if start in (None, hf.get("bos_token_id")) else start,  # None: the tokenizer's BOS
            n_head=hf["encoder_attention_heads"],
            n_embd=hf["d_model"],
            d_ff=ff_size(hf["encoder_ffn_dim"], hf["d_model"]),
            max_seq_len=hf.get("max_position_embeddings", 1024),
            pos="learned",
            pos_offset=POS_OFFSET,
            scale_embedding=bool(hf.get("scale_embedding", False)),
            n_segment=0,
            norm="layernorm",
            norm_position="post",
            embed_norm=True,
            norm_eps=1e-5,  # BART's nn.LayerNorm default
            mlp=ACTIVATIONS[act],
            bias=True,
            dropout=hf.get("dropout", 0.1),  # minilm has no separate activation_dropout
            attn_dropout=hf.get("attention_dropout", 0.0),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            lm_head_bias=head == "lm",
            init_std=hf.get("init_std", 0.02),
        ),
        source=source,
    )


def config_to_hf(config: ModelConfig, tokenizer=None) -> tuple[dict, str]:
    """(config.json fields, architecture) of a minilm encoder-decoder; ValueError for what BART cannot hold.

    The decoder starts from config.decoder_start_id (kept from a converted BART, whose is </s>), else
    from the tokenizer's BOS, as minilm's own encoder-decoders are trained (minilm/data/pretrain.py);
    BART's forced BOS/EOS are left out, so transformers' greedy search is minilm's."""
    require(config, "BART", **PLAIN_VARIANTS, norm="layernorm", norm_position="post", embed_norm=True, pos="learned", bias=True,
            n_segment=0, norm_eps=1e-5, pos_offset=POS_OFFSET)
    if config.mlp not in ("gelu", "gelu_tanh", "relu"):
        require(config, "BART", mlp="gelu")
    architecture = {"none": "BartModel", "lm": "BartForConditionalGeneration"}[config.head]
    ids = {role: getattr(tokenizer, f"{role}_id") if tokenizer is not None else None for role in ("pad", "bos", "eos")}
    hf = dict(
        architectures=[architecture],
        model_type=MODEL_TYPE,
        vocab_size=config.vocab_size,
        d_model=config.n_embd,
        encoder_layers=config.n_layer,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.n_head,
        decoder_attention_heads=config.n_head,
        encoder_ffn_dim=config.ff_size,
        decoder_ffn_dim=config.ff_size,
        activation_function={"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[config.mlp],
        max_position_embeddings=config.max_seq_len,
        scale_embedding=config.scale_embedding,
        dropout=config.dropout,
        attention_dropout=config.attn_dropout,
        activation_dropout=0.0,
        init_std=config.init_std,
        tie_word_embeddings=config.tie_embeddings,
        is_encoder_decoder=True,
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        decoder_start_token_id=config.decoder_start_id if config.decoder_start_id is not None else ids["bos"],
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    return hf, architecture


def extra_hf_tensors(config: ModelConfig) -> dict:
    """BartForConditionalGeneration always has final_logits_bias: zeros when minilm's head has no bias."""
    import torch

    if config.head == "lm" and not config.lm_head_bias:
        return {"final_logits_bias": torch.zeros(1, config.vocab_size)}
    return {}
