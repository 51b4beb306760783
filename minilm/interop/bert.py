"""BERT (Devlin et al. 2019) <-> minilm's Encoder: the name map and the config map, both ways.

BERT is minilm's encoder with post-norm blocks, a norm after the embeddings (`embed_norm`),
LayerNorm eps 1e-12 and exact GELU. Hugging Face architectures and the minilm head each becomes:

    BertModel                        head "none"     hidden states (see the pooler note below)
    BertForMaskedLM                  head "mlm"      MLM transform + tied decoder + bias
    BertForPreTraining               head "mlm+nsp"  MLM head, pooler and NSP (cls.seq_relationship)
    BertForSequenceClassification    head "cls" (or "regression" when problem_type says so)
    BertForTokenClassification       head "token"

The pooler: BertModel always carries one, but minilm's plain encoder (head "none") returns the
hidden states and has none. Its weights are kept only where a head uses them: loading a BertModel
as head "none" drops them, while fine-tuning from a BertModel (a "cls" or "regression" head,
minilm.training.finetuning.init_model) starts from them. A head-"none" encoder written as a BertModel has
no pooler weights, so transformers initialises its pooler afresh (and says so); the hidden states
are what match.
"""

from __future__ import annotations

from minilm.config import ModelConfig
from minilm.interop.mapping import PLAIN_VARIANTS, Table, ff_size, require, unsupported

MODEL_TYPE = "bert"
BASE_PREFIX = "bert."  # where the backbone sits inside the models with heads

# minilm                                          Hugging Face (inside BertModel)
BACKBONE = Table([
    ("transformer.embed.token",                    "embeddings.word_embeddings"),
    ("transformer.embed.position",                 "embeddings.position_embeddings"),
    ("transformer.embed.segment",                  "embeddings.token_type_embeddings"),
    ("transformer.embed.norm",                     "embeddings.LayerNorm"),
    ("transformer.blocks.{i}.attn.q_proj",         "encoder.layer.{i}.attention.self.query"),
    ("transformer.blocks.{i}.attn.k_proj",         "encoder.layer.{i}.attention.self.key"),
    ("transformer.blocks.{i}.attn.v_proj",         "encoder.layer.{i}.attention.self.value"),
    ("transformer.blocks.{i}.attn.o_proj",         "encoder.layer.{i}.attention.output.dense"),
    ("transformer.blocks.{i}.attn_norm",           "encoder.layer.{i}.attention.output.LayerNorm"),
    ("transformer.blocks.{i}.mlp.fc1",             "encoder.layer.{i}.intermediate.dense"),
    ("transformer.blocks.{i}.mlp.fc2",             "encoder.layer.{i}.output.dense"),
    ("transformer.blocks.{i}.mlp_norm",            "encoder.layer.{i}.output.LayerNorm"),
    ("pooler.dense",                               "pooler.dense"),
])

# minilm                                          Hugging Face (beside the backbone)
HEADS = Table([
    ("mlm.dense",                                  "cls.predictions.transform.dense"),
    ("mlm.norm",                                   "cls.predictions.transform.LayerNorm"),
    ("mlm.decoder.weight",                         "cls.predictions.decoder.weight"),  # when untied
    ("mlm.decoder.bias",                           "cls.predictions.bias"),
    ("nsp",                                        "cls.seq_relationship"),
    ("classifier.out",                             "classifier"),
])

# Hugging Face tensors that carry no weights: buffers, not parameters.
IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids")
# minilm tensors that a model keeps only when its head uses them (see the pooler note above).
DROPPED_UNLESS_USED = (r"pooler\..+",)

# transformers' weight ties, target -> source (how they load: _resolve_ties in minilm/interop/__init__.py)
TIES = {
    "cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
UNTIED_OWN_RULE = ("cls.predictions.decoder.weight",)  # untied, the MLM output matrix is minilm's own mlm.decoder.weight

ARCHITECTURES = {
    "BertModel": "none",
    "BertForMaskedLM": "mlm",
    "BertForPreTraining": "mlm+nsp",
    "BertForSequenceClassification": "cls",
    "BertForTokenClassification": "token",
}
DEFAULT_ARCHITECTURE = "BertModel"  # when config.json names none
HAS_BASE_PREFIX = {"BertModel": False}  # every other architecture nests the backbone under "bert."

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def config_to_minilm(hf: dict, architecture: str, source: str) -> ModelConfig:
    head = ARCHITECTURES[architecture]
    if hf.get("position_embedding_type", "absolute") != "absolute":
        unsupported(source, "position_embedding_type", hf["position_embedding_type"], "minilm's BERT has absolute learned positions")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        unsupported(source, "is_decoder", hf.get("is_decoder"), "a BERT encoder is bidirectional")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        unsupported(source, "hidden_act", act, f"expected one of {', '.join(ACTIVATIONS)}")
    if head in ("mlm", "mlm+nsp") and ACTIVATIONS[act] == "relu":
        unsupported(source, "hidden_act", act, "minilm's MLM head transform uses GELU")
    labels, prompt = [], {}
    if head in ("cls", "token") or (head == "mlm" and "minilm_prompt" in hf):
        id2label = hf.get("id2label") or {str(i): f"LABEL_{i}" for i in range(hf.get("num_labels", 2))}
        labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
        if head == "cls" and (hf.get("problem_type") == "regression" or len(labels) == 1):
            head, labels = "regression", []
    if head == "mlm" and "minilm_prompt" in hf:  # a prompt-based classifier (finetune.py --template) written by minilm
        prompt = dict(prompt=hf["minilm_prompt"], verbalizer_ids=hf.get("minilm_verbalizer_ids", []))
    dropout = hf.get("hidden_dropout_prob", 0.1)
    return ModelConfig.from_dict(
        dict(
            arch="encoder",
            head=head,
            vocab_size=hf["vocab_size"],
            n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"],
            n_embd=hf["hidden_size"],
            d_ff=ff_size(hf["intermediate_size"], hf["hidden_size"]),
            max_seq_len=hf.get("max_position_embeddings", 512),
            pos="learned",
            n_segment=hf.get("type_vocab_size", 2),
            norm="layernorm",
            norm_position="post",
            embed_norm=True,
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            mlp=ACTIVATIONS[act],
            bias=True,
            dropout=dropout,
            attn_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            init_std=hf.get("initializer_range", 0.02),
            n_labels=len(labels),
            labels=labels,
            **prompt,
        ),
        source=source,
    )


def config_to_hf(config: ModelConfig, tokenizer=None) -> tuple[dict, str]:
    """(config.json fields, architecture) of a minilm encoder; ValueError for what BERT cannot hold."""
    require(config, "BERT", **PLAIN_VARIANTS, norm="layernorm", norm_position="post", embed_norm=True, pos="learned", bias=True,
            pos_offset=0, scale_embedding=False)
    if config.mlp not in ("gelu", "gelu_tanh", "relu"):
        require(config, "BERT", mlp="gelu")
    if config.head in ("mlm", "mlm+nsp") and config.mlp == "relu":
        raise ValueError("ModelConfig.mlp='relu' with an MLM head: BERT's MLM transform would use relu, minilm's uses GELU")
    if config.n_segment < 1:
        raise ValueError("ModelConfig.n_segment=0: a BERT model always has a token-type embedding (n_segment >= 1)")
    architecture = {"none": "BertModel", "mlm": "BertForMaskedLM", "mlm+nsp": "BertForPreTraining",
                    "cls": "BertForSequenceClassification", "regression": "BertForSequenceClassification",
                    "token": "BertForTokenClassification"}[config.head]
    hf = dict(
        architectures=[architecture],
        model_type=MODEL_TYPE,
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        intermediate_size=config.ff_size,
        hidden_act={"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[config.mlp],
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attn_dropout,
        max_position_embeddings=config.max_seq_len,
        type_vocab_size=config.n_segment,
        initializer_range=config.init_std,
        layer_norm_eps=config.norm_eps,
        position_embedding_type="absolute",
        tie_word_embeddings=config.tie_embeddings,
        pad_token_id=tokenizer.pad_id if tokenizer is not None else None,
    )
    if config.head in ("cls", "token"):
        hf["id2label"] = {str(i): name for i, name in enumerate(config.labels or [f"LABEL_{i}" for i in range(config.n_labels)])}
        hf["label2id"] = {name: int(i) for i, name in hf["id2label"].items()}
    if config.head == "regression":
        hf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    if config.prompt:  # a prompt-based classifier: its labels, template and words beside BERT's fields (transformers keeps them unread)
        hf["id2label"] = {str(i): name for i, name in enumerate(config.labels)}
        hf["label2id"] = {name: i for i, name in enumerate(config.labels)}
        hf.update(minilm_prompt=config.prompt, minilm_verbalizer_ids=list(config.verbalizer_ids))
    return hf, architecture
