"""Llama (Touvron et al. 2023) -> minilm's Decoder: the name map and the config map, into minilm.

Llama is minilm's decoder with research switches set: pre-norm blocks of RMSNorm, rotary positions
(`pos="rope"`, the (i, i + hs/2) channel pairs of Hugging Face's rotate_half), grouped-query
attention (`n_kv_head`), a SwiGLU feed-forward (`mlp="swiglu"`) and no biases. Its SwiGLU names:

    gate_proj  W_1, the gate (silu)      -> mlp.fc1
    up_proj    W_3, the value            -> mlp.fc3
    down_proj  W_2                       -> mlp.fc2

minilm sizes SwiGLU's inner layer as 8 * ceil(2 d_ff / 3 / 8); Llama gives intermediate_size I
itself, so d_ff = 3 I / 2 (I a multiple of 8, as in every released Llama). Import only: minilm
writes Hugging Face checkpoints of BERT, GPT-2 and BART.

    LlamaModel          head "none"
    LlamaForCausalLM    head "lm"
"""

from __future__ import annotations

from minilm.config import ModelConfig
from minilm.interop.mapping import Table, unsupported

MODEL_TYPE = "llama"
BASE_PREFIX = "model."

# minilm                                          Hugging Face (inside LlamaModel)
BACKBONE = Table([
    ("transformer.embed.token",                    "embed_tokens"),
    ("transformer.blocks.{i}.attn_norm",           "layers.{i}.input_layernorm"),
    ("transformer.blocks.{i}.attn.q_proj",         "layers.{i}.self_attn.q_proj"),
    ("transformer.blocks.{i}.attn.k_proj",         "layers.{i}.self_attn.k_proj"),
    ("transformer.blocks.{i}.attn.v_proj",         "layers.{i}.self_attn.v_proj"),
    ("transformer.blocks.{i}.attn.o_proj",         "layers.{i}.self_attn.o_proj"),
    ("transformer.blocks.{i}.mlp_norm",            "layers.{i}.post_attention_layernorm"),
    ("transformer.blocks.{i}.mlp.fc1",             "layers.{i}.mlp.gate_proj"),
    ("transformer.blocks.{i}.mlp.fc3",             "layers.{i}.mlp.up_proj"),
    ("transformer.blocks.{i}.mlp.fc2",             "layers.{i}.mlp.down_proj"),
    ("transformer.norm",                           "norm"),
])

HEADS = Table([
    ("lm_head.weight",                             "lm_head.weight"),  # when untied (Llama's default)
])

IGNORED = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"rotary_emb\.inv_freq")  # buffers of older files
DROPPED_UNLESS_USED = ()
TIES = {"lm_head.weight": "embed_tokens.weight"}
UNTIED_OWN_RULE = ("lm_head.weight",)

ARCHITECTURES = {"LlamaModel": "none", "LlamaForCausalLM": "lm"}
DEFAULT_ARCHITECTURE = "LlamaForCausalLM"
HAS_BASE_PREFIX = {"LlamaModel": False}


def rope_theta(hf: dict, source: str) -> float:
    """theta of the default rotary embedding: `rope_parameters` (transformers 5) or `rope_theta`;
    scaled variants (linear, dynamic, YaRN, Llama 3's) are refused."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        unsupported(source, "rope_type", kind, "minilm's rotary embedding is the unscaled one")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_to_minilm(hf: dict, architecture: str, source: str) -> ModelConfig:
    if hf.get("hidden_act", "silu") != "silu":
        unsupported(source, "hidden_act", hf["hidden_act"], "minilm's SwiGLU gates with silu")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag, False):
            unsupported(source, flag, True, "minilm's Llama has no biases")
    if hf.get("pretraining_tp", 1) != 1:
        unsupported(source, "pretraining_tp", hf["pretraining_tp"], "a training-time split that changes results")
    n_embd, n_head = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    if hf.get("head_dim") not in (None, n_embd // n_head):
        unsupported(source, "head_dim", hf["head_dim"], f"minilm's head size is hidden_size / num_attention_heads = {n_embd // n_head}")
    inner = hf.get("intermediate_size", 11008)
    if inner % 8:
        unsupported(source, "intermediate_size", inner, "minilm's SwiGLU takes a multiple of 8")
    return ModelConfig.from_dict(
        dict(
            arch="decoder",
            head=ARCHITECTURES[architecture],
            vocab_size=hf.get("vocab_size", 32000),
            n_layer=hf.get("num_hidden_layers", 32),
            n_head=n_head,
            n_kv_head=hf.get("num_key_value_heads") or n_head,
            n_embd=n_embd,
            d_ff=3 * inner // 2,
            max_seq_len=hf.get("max_position_embeddings", 2048),
            pos="rope",
            rope_theta=rope_theta(hf, source),
            n_segment=0,
            norm="rmsnorm",
            norm_position="pre",
            embed_norm=False,
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            mlp="swiglu",
            bias=False,
            dropout=0.0,
            attn_dropout=hf.get("attention_dropout", 0.0),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            init_std=hf.get("initializer_range", 0.02),
        ),
        source=source,
    )


def config_to_hf(config: ModelConfig, tokenizer=None):
    raise ValueError("minilm reads Llama checkpoints but does not write them (it writes BERT, GPT-2 and BART)")
