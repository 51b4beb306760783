"""The model configuration: one typed dataclass that rebuilds any minilm model.

Every checkpoint stores its `ModelConfig` as `config.json`, so a checkpoint alone rebuilds its model.
Research knobs are string choices, each resolved by name in the module that implements it; the
four marked * are extension points, to which a file of your own adds names (minilm/model/registry.py):

    pos *          "learned" | "sinusoidal" | "rope" | "alibi" (minilm/model/embeddings.py)
    norm *         "layernorm" | "rmsnorm"                     (minilm/model/norms.py)
    norm_position  "pre" | "post"                              (minilm/model/blocks.py)
    mlp *          "gelu" | "gelu_tanh" | "relu" | "swiglu"    (minilm/model/mlp.py) | "moe" (minilm/model/moe.py)
    attn_impl *    "math" | "sdpa"                             (minilm/model/attention.py)
    loss_impl      "logits" | "chunked"                        (minilm/model/heads.py: LMHead.loss_sum)
    head           see HEADS below                             (minilm/model/heads.py)

Presets give the sizes people use; `from_preset("mini", arch="decoder", vocab_size=8192)` applies
the family's defaults (`ARCH_DEFAULTS`), then the preset, then the overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from minilm.files import atomic_write_text
from minilm.model import registry

ARCHS = ("encoder", "decoder", "encoder-decoder")
# the built-in choices of the four extension points; a plugin adds names (minilm/model/registry.py)
POSITIONS, NORMS, MLPS, ATTN_IMPLS = (tuple(registry.BUILTIN[kind]) for kind in ("position", "norm", "mlp", "attention"))
NORM_POSITIONS = ("pre", "post")
POOLINGS = ("cls", "mean")  # what a sentence head (cls, regression, nsp) reads: the [CLS] state, or the mean of the real tokens
# how an encoder's cls / regression head reads a text pair: one sequence "[CLS] a [SEP] b [SEP]" (BERT's
# cross-encoder), or each text encoded alone and their pooled vectors compared (Sentence-BERT's bi-encoder)
PAIR_ENCODINGS = ("cross", "bi")
LOSS_IMPLS = ("logits", "chunked")  # the LM loss through the full logits, or in row chunks (kernels/cross_entropy.py)

# Which heads sit on which backbone. "none" returns the hidden states (B, T, C).
HEADS = {
    "encoder": ("none", "mlm", "mlm+nsp", "cls", "regression", "token"),
    "decoder": ("none", "lm", "cls", "regression"),
    "encoder-decoder": ("none", "lm"),
}
LABELLED_HEADS = ("cls", "token")  # heads that need n_labels > 0


# Readers of the config.json files of other libraries, as (accepts(fields) -> bool, read(fields,
# source) -> ModelConfig). minilm/interop registers Hugging Face's; the configuration itself knows
# no other library (nothing here imports the rest of minilm).
FOREIGN_CONFIGS: list = []


@dataclass
class ModelConfig:
    """Architecture of one minilm model (sizes in the notation of the papers).

    n_embd is d_model, n_head is h, d_ff the inner size of the feed-forward network
    (4 * n_embd when None), n_layer the number of blocks (the encoder's, for encoder-decoder;
    n_decoder_layer the decoder's, n_layer when None).
    """

    arch: str = "encoder"
    head: str = "none"
    vocab_size: int = 8192
    n_layer: int = 4
    n_decoder_layer: int | None = None
    decoder_start_id: int | None = None  # encoder-decoder: the first token of the decoder's input (BART's is </s>); None: the tokenizer's BOS
    n_head: int = 4
    n_kv_head: int | None = None  # key/value heads: n_head when None (multi-head), fewer for grouped-query, 1 for multi-query
    qk_norm: bool = False  # normalise each head's queries and keys (the config's norm over hs) before the scores
    attn_window: int | None = None  # sliding-window attention: each query sees the keys fewer than this many positions away; None: all
    moe_experts: int = 4  # mlp="moe": experts per layer
    moe_top_k: int = 2  # mlp="moe": experts each token is sent to
    moe_aux_weight: float = 0.01  # mlp="moe": the weight of the load-balancing loss in the training loss
    share_layers: bool = False  # ALBERT: every layer of a stack applies one block's weights
    parallel_block: bool = False  # attention and MLP side by side on one norm's output (GPT-J, PaLM); pre-norm, no cross-attention
    n_embd: int = 256
    d_ff: int | None = None
    max_seq_len: int = 128
    pos: str = "learned"
    n_segment: int = 0  # size of the segment (token-type) vocabulary; 0 = no segment embedding
    pos_offset: int = 0  # learned position p is row p + pos_offset of the table (BART keeps rows 0, 1 unused: 2)
    scale_embedding: bool = False  # token embeddings times sqrt(n_embd) (Vaswani et al. 2017, 3.4; mBART)
    norm: str = "layernorm"
    norm_position: str = "pre"
    embed_norm: bool = False  # a norm right after the embedding sum (BERT, BART)
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    attn_impl: str = "sdpa"
    loss_impl: str = "logits"  # how training computes the "lm" head's loss: full logits, or chunks of rows
    bias: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.1
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    lm_head_bias: bool = False  # a bias on the "lm" head's vocabulary scores (BART's final_logits_bias)
    init_std: float = 0.02
    pooling: str = "cls"  # the pooler's input: the first ([CLS]) state, as BERT, or the mean over real tokens
    pair_encoding: str = "cross"  # text pairs for a cls / regression head: one sequence, or each text alone ("bi"; PAIR_ENCODINGS)
    n_labels: int = 0
    labels: list[str] = field(default_factory=list)  # names of the classes of a cls/token head
    prompt: str = ""  # prompt-based fine-tuning (LM-BFF): the template, "{text} It was [MASK].", the mlm head scoring the labels' words
    verbalizer_ids: list[int] = field(default_factory=list)  # with prompt: the token id of each label's word, in label order
    layer_heads: list[int] | None = None  # self-attention heads of each block after structured pruning (minilm/training/prune.py); None: n_head in all
    layer_ff: list[int] | None = None  # feed-forward inner size of each block after structured pruning; None: the MLP's own in all

    def __post_init__(self):
        self._check_types()

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"ModelConfig.{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")

        choice("arch", ARCHS)
        for kind, name in registry.FIELD.items():  # pos, norm, mlp, attn_impl: built in or registered
            choice(name, registry.names(kind))
        choice("norm_position", NORM_POSITIONS)
        choice("loss_impl", LOSS_IMPLS)
        choice("pooling", POOLINGS)
        choice("pair_encoding", PAIR_ENCODINGS)
        choice("head", HEADS[self.arch])
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: must be a positive integer")
        if self.n_decoder_layer is not None and self.n_decoder_layer < 1:
            raise ValueError(f"ModelConfig.n_decoder_layer={self.n_decoder_layer!r}: must be positive or None")
        if self.d_ff is not None and self.d_ff < 1:
            raise ValueError(f"ModelConfig.d_ff={self.d_ff!r}: must be positive or None")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"ModelConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_kv_head == self.n_head:
            self.n_kv_head = None  # as many key/value heads as query heads: plain multi-head attention, one spelling
        if self.n_kv_head is not None and not (1 <= self.n_kv_head <= self.n_head and self.n_head % self.n_kv_head == 0):
            raise ValueError(f"ModelConfig.n_kv_head={self.n_kv_head}: must divide n_head={self.n_head} (each key/value head serves "
                             "a group of n_head / n_kv_head query heads)")
        if self.n_kv_head not in (None, self.n_head) and self.layer_heads is not None:
            raise ValueError("ModelConfig: layer_heads (structured pruning of heads) applies to multi-head attention, not to n_kv_head < n_head")
        if self.mlp == "moe" and not (1 <= self.moe_top_k <= self.moe_experts):
            raise ValueError(f"ModelConfig: moe_top_k={self.moe_top_k} must lie in [1, moe_experts={self.moe_experts}]")
        if self.share_layers and (self.layer_heads is not None or self.layer_ff is not None):
            raise ValueError("ModelConfig: layer_heads / layer_ff (structured pruning per block) do not apply to share_layers (one block for all)")
        if self.pos == "alibi" and self.layer_heads is not None:
            raise ValueError("ModelConfig: layer_heads (structured pruning of heads) does not apply to ALiBi positions (a slope per head)")
        if self.decoder_start_id is not None and not 0 <= self.decoder_start_id < self.vocab_size:
            raise ValueError(f"ModelConfig.decoder_start_id={self.decoder_start_id}: not a token id of the {self.vocab_size}-token vocabulary")
        if self.pair_encoding == "bi" and self.arch != "encoder":
            raise ValueError(f"ModelConfig.pair_encoding='bi' (each text of a pair encoded alone) needs an encoder, not {self.arch!r}")
        if self.attn_window is not None and self.attn_window < 1:
            raise ValueError(f"ModelConfig.attn_window={self.attn_window}: must be a positive number of positions, or None")
        if self.parallel_block and (self.norm_position != "pre" or self.arch == "encoder-decoder"):
            raise ValueError("ModelConfig.parallel_block: needs norm_position='pre' and one stack without cross-attention "
                             f"(an encoder or a decoder), not norm_position={self.norm_position!r}, arch={self.arch!r}")
        if self.pos == "rope" and self.head_size % 2 != 0:
            raise ValueError(f"ModelConfig: rotary positions need an even head size, got {self.head_size}")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.attn_dropout < 1.0):
            raise ValueError("ModelConfig: dropout and attn_dropout must lie in [0, 1)")
        if self.n_segment < 0:
            raise ValueError(f"ModelConfig.n_segment={self.n_segment}: must be >= 0")
        if self.pos_offset < 0:
            raise ValueError(f"ModelConfig.pos_offset={self.pos_offset}: must be >= 0")
        if self.pos_offset and self.pos != "learned":
            raise ValueError(f"ModelConfig.pos_offset={self.pos_offset}: applies to pos='learned' only, not {self.pos!r}")
        if self.lm_head_bias and self.head != "lm":
            raise ValueError(f"ModelConfig.lm_head_bias: applies to the 'lm' head only, not {self.head!r}")
        if self.head == "mlm+nsp" and self.n_segment < 2:
            raise ValueError("ModelConfig: the mlm+nsp head needs n_segment >= 2 (segments A and B)")
        if self.head in LABELLED_HEADS and self.n_labels < 1:
            raise ValueError(f"ModelConfig: head {self.head!r} needs n_labels >= 1")
        if self.labels and len(self.labels) != self.n_labels:
            raise ValueError(f"ModelConfig: {len(self.labels)} label names for n_labels={self.n_labels}")
        self.labels = list(self.labels)
        self.verbalizer_ids = list(self.verbalizer_ids)
        if self.prompt or self.verbalizer_ids:
            if self.head != "mlm" or self.prompt.count("{text}") != 1 or self.prompt.count("[MASK]") != 1:
                raise ValueError(f"ModelConfig.prompt={self.prompt!r}: a template with {{text}} and [MASK] once each, on the 'mlm' head "
                                 f"(this one is {self.head!r})")
            if len(self.verbalizer_ids) != self.n_labels or self.n_labels < 2 or len(set(self.verbalizer_ids)) != self.n_labels:
                raise ValueError(f"ModelConfig.verbalizer_ids={self.verbalizer_ids}: one distinct token per label, n_labels={self.n_labels} (at least 2)")
            if not all(0 <= i < self.vocab_size for i in self.verbalizer_ids):
                raise ValueError(f"ModelConfig.verbalizer_ids={self.verbalizer_ids}: outside the vocabulary of {self.vocab_size}")
        for name, most in (("layer_heads", self.n_head), ("layer_ff", None)):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if self.arch == "encoder-decoder":
                raise ValueError(f"ModelConfig.{name}: structured pruning applies to one stack of blocks (encoder or decoder), not to {self.arch!r}")
            if len(sizes) != self.n_layer or any(n < 1 or (most is not None and n > most) for n in sizes):
                raise ValueError(f"ModelConfig.{name}={sizes}: expected {self.n_layer} sizes, each at least 1" + (f" and at most n_head={most}" if most else ""))
            setattr(self, name, list(sizes))

    def _check_types(self):
        """Each field holds a value of its declared type (a config.json may hold anything): ints
        are not bools, floats take ints, lists hold strings."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("list[int]"):
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            elif kind.startswith("int"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind.startswith("float"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif kind.startswith("bool"):
                ok = isinstance(value, bool)
            elif kind.startswith("str"):
                ok = isinstance(value, str)
            else:  # list[str]
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            if not ok:
                raise ValueError(f"ModelConfig.{f.name}={value!r}: expected {kind.replace('| None', 'or None')}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def ff_size(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.n_embd

    def decoder_start(self, tokenizer) -> int:
        """The token an encoder-decoder's decoder input starts from: decoder_start_id, else the
        tokenizer's BOS (ValueError naming what is missing when it has none)."""
        if self.decoder_start_id is not None:
            return self.decoder_start_id
        tokenizer.require(["bos"], "an encoder-decoder's output (it starts from BOS)")
        return tokenizer.bos_id

    @property
    def position_limit(self) -> int | None:
        """The most positions the model can read: max_seq_len for a table of positions (learned,
        sinusoidal), None for rotary and ALiBi positions (any length)."""
        return self.max_seq_len if getattr(registry.lookup("position", self.pos), "bounded", True) else None

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    def heads_in(self, layer: int) -> int:
        """Self-attention heads of block `layer` (fewer than n_head after structured pruning)."""
        return self.layer_heads[layer] if self.layer_heads is not None else self.n_head

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layer if self.n_decoder_layer is not None else self.n_layer

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "ModelConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start + 1}: {e.reason})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of config fields")
        for accepts, read in FOREIGN_CONFIGS:  # a Hugging Face config.json: its fields mapped by minilm/interop
            if accepts(data):
                return read(data, str(path))
        return cls.from_dict(data, source=str(path))


# The defaults of each family. Our own models are pre-norm, unlike the original BERT and
# Transformer (post-norm), because pre-norm trains stably from scratch with a short warmup
# (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture").
ARCH_DEFAULTS = {
    "encoder": dict(n_segment=2, embed_norm=True, pos="learned", mlp="gelu"),  # BERT
    "decoder": dict(n_segment=0, embed_norm=False, pos="learned", mlp="gelu_tanh"),  # GPT-2
    "encoder-decoder": dict(n_segment=0, embed_norm=True, pos="learned", mlp="gelu"),  # BART
}

PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, max_seq_len=64),  # tests
    "mini": dict(n_layer=4, n_head=4, n_embd=256, max_seq_len=128),  # the laptop default
    "small": dict(n_layer=6, n_head=6, n_embd=384, max_seq_len=256),
    "base": dict(n_layer=12, n_head=12, n_embd=768, max_seq_len=512),  # BERT-base / GPT-2 size
}


def from_preset(name: str, arch: str = "encoder", **overrides) -> ModelConfig:
    """Family defaults, then the named preset, then `overrides` (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: expected one of {', '.join(ARCHS)}")
    fields = {"arch": arch, **ARCH_DEFAULTS[arch], **PRESETS[name]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_dict(fields, source=f"preset {name!r}")
