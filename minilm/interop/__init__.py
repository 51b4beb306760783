"""Hugging Face checkpoints in and out: the only part of minilm that knows their names.

    is_hf_checkpoint(path)            a directory whose config.json names a model_type
    load_hf(path)                     -> (minilm model, Tokenizer or None)
    save_hf(model, tokenizer, path)   a directory that `transformers` loads with the same outputs

A Hugging Face checkpoint directory holds config.json and model.safetensors (or pytorch_model.bin,
read with torch.load(weights_only=True), which unpickles tensors and plain containers only), and
its tokenizer as tokenizer.json or, for BERT, vocab.txt. Each family has one module with its name
map and its config map, both ways:

    bert.py   BertModel, BertForMaskedLM, BertForPreTraining, ...  <-> Encoder
    gpt2.py   GPT2Model, GPT2LMHeadModel                             <-> Decoder
    bart.py   BartModel, BartForConditionalGeneration                <-> EncoderDecoder
    llama.py  LlamaModel, LlamaForCausalLM                            -> Decoder (GQA, RoPE, RMSNorm, SwiGLU; read only)

minilm never imports `transformers`: configs are read as JSON, tensors as safetensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minilm.config import FOREIGN_CONFIGS, ModelConfig
from minilm.files import atomic_write_json, write_directory
from minilm.interop import bart, bert, gpt2, llama
from minilm.model.families import build_model, unwrap
from minilm.tokenizer import DIRECTORY_READERS, SPECIAL_ALIASES, Tokenizer

FAMILIES = {bert.MODEL_TYPE: bert, gpt2.MODEL_TYPE: gpt2, bart.MODEL_TYPE: bart, llama.MODEL_TYPE: llama}
FAMILY_OF_ARCH = {"encoder": bert, "decoder": gpt2, "encoder-decoder": bart}  # what save_hf writes
CONFIG_FILE, SAFETENSORS_FILE, TORCH_FILE = "config.json", "model.safetensors", "pytorch_model.bin"
TOKENIZER_FILE, VOCAB_FILE, TOKENIZER_CONFIG_FILE = "tokenizer.json", "vocab.txt", "tokenizer_config.json"


# -- recognising and reading ---------------------------------------------------------------------
def is_hf_config(data) -> bool:
    """A config dict written by `transformers` (minilm's own never has "model_type")."""
    return isinstance(data, dict) and "model_type" in data


def is_hf_checkpoint(path) -> bool:
    path = Path(path)
    try:
        with open(path / CONFIG_FILE, encoding="utf-8") as f:
            return is_hf_config(json.load(f))
    except (OSError, ValueError):
        return False


def _family_and_architecture(hf: dict, source: str):
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ValueError(
            f"{source}: model_type={model_type!r} is not supported: minilm converts {', '.join(map(repr, FAMILIES))}"
        )
    family = FAMILIES[model_type]
    architectures = hf.get("architectures") or [family.DEFAULT_ARCHITECTURE]
    architecture = architectures[0] if isinstance(architectures, list) else None
    if not isinstance(architecture, str) or architecture not in family.ARCHITECTURES:
        raise ValueError(
            f"{source}: architectures={architectures!r} is not supported: for {model_type} minilm converts "
            f"{', '.join(family.ARCHITECTURES)}"
        )
    return family, architecture


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
    """The minilm config of a Hugging Face config.json's fields."""
    family, architecture = _family_and_architecture(hf, source)
    try:
        return family.config_to_minilm(hf, architecture, source)
    except KeyError as e:
        raise ValueError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:  # a field of the wrong type or value
        message = str(e)
        raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None


def read_hf_config(path) -> dict:
    path = Path(path) / CONFIG_FILE
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def read_hf_tensors(path) -> tuple[dict, Path]:
    """The tensors of a Hugging Face checkpoint directory and the file they came from."""
    path = Path(path)
    if (path / SAFETENSORS_FILE).is_file():
        file = path / SAFETENSORS_FILE
        try:
            return load_file(file), file
        except Exception as e:  # the Rust reader raises its own error types
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    if (path / TORCH_FILE).is_file():
        file = path / TORCH_FILE
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            raise ValueError(f"{file}: not a loadable weights file ({e})") from None
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise ValueError(f"{file}: expected a dict of tensor names to tensors")
        return state, file
    raise FileNotFoundError(f"{path}: no weights ({SAFETENSORS_FILE} or {TORCH_FILE})")


# -- Hugging Face tensors -> minilm tensors --------------------------------------------------------
def _hf_to_minilm_state(family, hf: dict, tensors: dict, file) -> dict:
    """Map every tensor to its minilm name; refuse any that no rule covers.

    The backbone's names lose the prefix they have inside a model with a head ("bert.", ...);
    the heads' names ("cls.predictions.bias", "lm_head.weight") never collide with them."""
    flat = {}
    for key, t in tensors.items():
        key = key[len(family.BASE_PREFIX) :] if key.startswith(family.BASE_PREFIX) else key
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))  # old BERT files
        if not any(re.fullmatch(p, key) for p in family.IGNORED):
            flat[key] = t
    _resolve_ties(family, hf, flat, file)
    state, rest = family.BACKBONE.to_minilm(flat)
    head_state, unused = family.HEADS.to_minilm({k: flat[k] for k in rest})
    if unused:
        raise ValueError(
            f"{file}: no rule of minilm/interop/{family.MODEL_TYPE}.py maps "
            f"{', '.join(sorted(unused)[:5])}{' ...' if len(unused) > 5 else ''}"
        )
    return state | head_state


# transformers ties some weights, target -> source (each family's TIES). With tie_word_embeddings
# (the default) a target holds its source's tensor: a file stores the source (or, older ones, the
# target alone), and the tables map the source. Without it, transformers 5 unties them all: a
# target is a tensor of its own, which either has its own rule (UNTIED_OWN_RULE: an untied LM
# head) or is the tensor the model uses in the source's place.
def _resolve_ties(family, hf: dict, flat: dict, file) -> None:
    tied = hf.get("tie_word_embeddings", True)
    taken = set()  # sources whose place an untied target took
    for target, source in family.TIES.items():
        if target not in flat or (not tied and target in family.UNTIED_OWN_RULE):
            continue
        t = flat.pop(target)
        if tied and source in flat:
            continue  # the same tensor, stored twice
        if source in taken and not torch.equal(flat[source], t):
            first = next(k for k, v in family.TIES.items() if v == source and k != target)
            raise ValueError(
                f"{file}: {first} and {target} differ, but a minilm model shares one tensor between them "
                f"(tie_word_embeddings=false unties them in transformers 5)"
            )
        flat[source] = t
        taken.add(source)


def _untie(family, hf: dict, *groups: dict) -> None:
    """Add the copies that transformers 5 expects as tensors of their own when nothing is tied
    (each beside its source: in the backbone's group or the heads')."""
    if hf.get("tie_word_embeddings", True):
        return
    for target, source in family.TIES.items():
        for tensors in groups:
            if target not in tensors and source in tensors and target not in family.UNTIED_OWN_RULE:
                tensors[target] = tensors[source].clone()


def load_hf_state(path) -> tuple[ModelConfig, dict, Path]:
    """(minilm config, minilm-named tensors, weights file) of a Hugging Face checkpoint directory,
    every weight it holds included (a BertModel's pooler too, which a fine-tuned head starts from)."""
    hf = read_hf_config(path)
    source = str(Path(path) / CONFIG_FILE)
    config = config_from_hf(hf, source)
    family, _ = _family_and_architecture(hf, source)
    tensors, file = read_hf_tensors(path)
    return config, _hf_to_minilm_state(family, hf, tensors, file), file


def load_hf(path, **config_changes):
    """(minilm model, Tokenizer) of a Hugging Face checkpoint directory: the model in eval mode,
    the tokenizer None when the directory has neither tokenizer.json nor vocab.txt."""
    return load_hf_model(path, **config_changes), load_hf_tokenizer(path)


def load_hf_model(path, **config_changes):
    """A minilm model with the weights of a Hugging Face checkpoint directory, in eval mode.
    `config_changes` as for minilm.from_pretrained (fields that keep the weights' shapes)."""
    path = Path(path)
    config, state, file = load_hf_state(path)
    if config_changes:
        config = config.replace(**config_changes)
    model = build_model(config)
    params = dict(model.named_parameters(remove_duplicate=False))
    family, _ = _family_and_architecture(read_hf_config(path), str(path / CONFIG_FILE))
    own = model.state_dict()
    for name in list(state):  # weights a head does not use (BertModel's pooler under head "none")
        if name not in own and any(re.fullmatch(p, name) for p in family.DROPPED_UNLESS_USED):
            del state[name]
    for name in own:  # tied parameters stored once: every name of one Parameter gets its tensor
        if name not in state:
            twin = next((k for k in state if params.get(k) is not None and params.get(k) is params.get(name)), None)
            if twin is not None:
                state[name] = state[twin]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{file}: weights do not fit {path / CONFIG_FILE}: "
            + "; ".join(f"{what} {', '.join(names[:5])}" for what, names in (("missing", missing), ("unexpected", unexpected)) if names)
        )
    for name, t in state.items():
        if t.shape != own[name].shape:
            raise ValueError(f"{file}: {name} has shape {tuple(t.shape)}, {path / CONFIG_FILE} needs {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


# -- tokenizers ------------------------------------------------------------------------------------
def load_hf_tokenizer(path) -> Tokenizer | None:
    """tokenizer.json as it is, or a WordPiece tokenizer built from vocab.txt (lower-cased unless
    tokenizer_config.json says do_lower_case: false); None when there is neither."""
    path = Path(path)
    if (path / TOKENIZER_FILE).is_file():
        return Tokenizer.load(path / TOKENIZER_FILE)
    if (path / VOCAB_FILE).is_file():
        lowercase = True
        if (path / TOKENIZER_CONFIG_FILE).is_file():
            with open(path / TOKENIZER_CONFIG_FILE, encoding="utf-8") as f:
                lowercase = bool(json.load(f).get("do_lower_case", True))
        with open(path / VOCAB_FILE, encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        try:
            return Tokenizer.from_vocab(vocab, lowercase=lowercase)
        except ValueError as e:
            raise ValueError(f"{path / VOCAB_FILE}: {e}") from None
    return None


def _tokenizer_config(tokenizer: Tokenizer, config: ModelConfig) -> dict:
    """tokenizer_config.json: the generic fast tokenizer over tokenizer.json, with its special tokens."""
    names = {"pad": "pad_token", "unk": "unk_token", "cls": "cls_token", "sep": "sep_token",
             "mask": "mask_token", "bos": "bos_token", "eos": "eos_token"}
    out = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_seq_len}
    for role in SPECIAL_ALIASES:
        token = tokenizer.special_token(role)
        if token is not None:
            out[names[role]] = token
    return out


# -- minilm -> Hugging Face ---------------------------------------------------------------------------
def hf_files(model, tokenizer: Tokenizer | None = None) -> tuple[dict, dict]:
    """(config.json fields, Hugging Face tensors) of a minilm model."""
    config = model.config
    if config.layer_heads is not None or config.layer_ff is not None:
        raise ValueError("a structurally pruned model (heads or feed-forward neurons per block, minilm/training/prune.py) has no Hugging Face "
                         "BERT / GPT-2 / BART config to hold it: those give every layer the same sizes")
    family = FAMILY_OF_ARCH[config.arch]
    hf, architecture = family.config_to_hf(config, tokenizer)
    state = {name: p.detach() for name, p in model.named_parameters()}  # each tied Parameter once
    base, rest = family.BACKBONE.to_hf(state)
    heads, unused = family.HEADS.to_hf({k: state[k] for k in rest})
    if unused:  # a gap in a table, never a user's mistake
        raise ValueError(f"no rule of minilm/interop/{family.MODEL_TYPE}.py maps {', '.join(unused)}")
    _untie(family, hf, base, heads)
    prefix = family.BASE_PREFIX if family.HAS_BASE_PREFIX.get(architecture, True) else ""
    tensors = {prefix + k: t for k, t in base.items()} | heads
    extra = getattr(family, "extra_hf_tensors", None)
    if extra is not None:
        tensors |= extra(config)
    return hf, tensors


def save_hf(model, tokenizer: Tokenizer | None, path) -> dict:
    """Write a Hugging Face checkpoint directory (config.json, model.safetensors and, with a
    tokenizer, tokenizer.json + tokenizer_config.json), swapped in whole: never half written.
    Returns the config.json fields."""
    model = unwrap(model)
    hf, tensors = hf_files(model, tokenizer)

    def fill(tmp: Path):
        save_file(tensors, tmp / SAFETENSORS_FILE, metadata={"format": "pt"})
        atomic_write_json(tmp / CONFIG_FILE, hf)
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
            atomic_write_json(tmp / TOKENIZER_CONFIG_FILE, _tokenizer_config(tokenizer, model.config))

    write_directory(path, fill)
    return hf


# What a minilm reader does with a Hugging Face file, registered where the readers look for it:
# the configuration and the tokenizer know nothing of this package.
FOREIGN_CONFIGS.append((is_hf_config, config_from_hf))
DIRECTORY_READERS.append(lambda path: load_hf_tokenizer(path) if is_hf_checkpoint(path) else None)
