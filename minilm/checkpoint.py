"""Checkpoints: directories of safetensors and JSON, every write atomic.

    <dir>/model.safetensors      the weights (tied tensors stored once)
    <dir>/config.json            the ModelConfig that rebuilds the model
    <dir>/tokenizer.json         the tokenizer
    <dir>/training_state.json    (resumable checkpoints) step, schedule, data position, RNG ...
    <dir>/training_state.safetensors   ... and the tensors among them (optimizer moments, RNG)
    <dir>/helpers.safetensors    (pretraining with helper networks) their weights, see `kept_model`

Nothing is ever unpickled: tensors travel as safetensors, everything else as JSON. A file is
written to a temporary name and renamed into place; a whole checkpoint directory is written
beside the old one and swapped in, so a crash at any moment leaves a complete checkpoint.

A Hugging Face checkpoint directory (its config.json names a "model_type") loads too:
`from_pretrained` and `load_weights` hand it to minilm/interop, which maps its names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file

from minilm.config import ModelConfig
from minilm.files import atomic_write, atomic_write_json, atomic_write_text, write_directory  # noqa: F401  (also minilm.checkpoint's names)
from minilm.model.families import build_model, unwrap
from minilm.tokenizer import Tokenizer

MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
HELPERS_FILE = "helpers.safetensors"
STATE_JSON, STATE_TENSORS = "training_state.json", "training_state.safetensors"


# -- nested state with tensors -> JSON + safetensors ---------------------------------------------
def _split_tensors(obj, tensors, prefix="t"):
    """Replace every tensor in a nested dict/list by {"__tensor__": key}; collect the tensors."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, tensors, prefix) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, tensors, prefix) for v in obj]
    return obj


def _join_tensors(obj, tensors):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_state(directory, state: dict) -> None:
    """Write a nested dict of JSON values and tensors as training_state.{json,safetensors}."""
    tensors = {}
    skeleton = _split_tensors(state, tensors)
    atomic_write(Path(directory) / STATE_TENSORS, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(Path(directory) / STATE_JSON, skeleton)


def load_state(directory) -> dict:
    directory = Path(directory)
    with open(directory / STATE_JSON, encoding="utf-8") as f:
        skeleton = json.load(f)
    return _join_tensors(skeleton, load_file(directory / STATE_TENSORS))


# -- model checkpoints ---------------------------------------------------------------------------
def kept_model(model):
    """(the network a checkpoint stores as its model, the prefix of its names in `model`'s state).

    Usually `model` itself and "". A pretraining wrapper that trains helper networks beside the
    model it pretrains, to be thrown away after (ELECTRA's generator and replaced-token head around
    its discriminator: minilm/training/electra.py), names that model's attribute in `kept`: its checkpoints
    hold the kept network as a plain model (model.safetensors + config.json, what `from_pretrained`
    and fine-tuning load) and every other tensor of the wrapper in helpers.safetensors, so that
    `load_into` restores the whole wrapper for --resume."""
    name = getattr(model, "kept", None)
    return (model, "") if name is None else (getattr(model, name), name + ".")


def _with_aliases(model, state: dict) -> dict:
    """`state` plus every further name of a parameter shared between modules (ELECTRA's generator
    reads the discriminator's embeddings), which load_state_dict(strict=True) asks for."""
    first = {}
    for name, p in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        first.setdefault(p, name)
        if name not in state and first[p] in state:
            state[name] = state[first[p]]
    return state


def owned_tensors(model, state: dict | None = None) -> dict:
    """Every weight once, under the name of the module that owns it: a tied LM head's matrix is
    stored as the token embedding it shares (`transformer.embed.token.weight`), not under the
    alphabetically first of its names, so any reader of the file finds the embedding. The values
    come from `state` when given (the full tensors of a sharded model), else from the model."""
    state = model.state_dict() if state is None else state
    names = [n for n, _ in model.named_parameters()]  # shared parameters once, under their first (owning) name
    names += [n for n, _ in model.named_buffers() if n in state]  # persistent buffers
    return {n: state[n].detach().contiguous() for n in names}


def save_pretrained(directory, model, tokenizer: Tokenizer | None = None, tensors: dict | None = None) -> None:
    """Write model.safetensors, config.json (and tokenizer.json), each file atomically. A model
    with a parameter-efficient adapter (minilm.peft) writes only its trained tensors,
    adapter.safetensors, and adapter_config.json, which names the base checkpoint. `tensors`: the
    model's full state dict, when its own parameters are shards (minilm/training/distributed.py)."""
    directory = Path(directory)
    model = unwrap(model)
    network, prefix = kept_model(model)
    if prefix:  # the helpers' tensors beside, the kept network as the model
        helpers = {n: t for n, t in owned_tensors(model, tensors).items() if not n.startswith(prefix)}
        atomic_write(directory / HELPERS_FILE, lambda tmp: save_file(helpers, tmp))
        tensors = None if tensors is None else {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}
        model = network
    elif (directory / HELPERS_FILE).exists():
        (directory / HELPERS_FILE).unlink()  # an earlier run's: they belong to other weights
    spec = getattr(model, "peft", None)
    if spec is not None:
        from minilm import peft

        atomic_write(directory / peft.WEIGHTS_FILE, lambda tmp: save_file(peft.trained_tensors(model, tensors), tmp))
        spec.save(directory / peft.SPEC_FILE)
        if (directory / MODEL_FILE).exists():
            (directory / MODEL_FILE).unlink()  # a full model from an earlier run would shadow the adapter
    else:
        atomic_write(directory / MODEL_FILE, lambda tmp: save_file(owned_tensors(model, tensors), tmp))
    model.config.save(directory / CONFIG_FILE)
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_FILE)


def save_checkpoint(directory, model, tokenizer=None, state: dict | None = None, tensors: dict | None = None) -> None:
    """A complete resumable checkpoint directory, swapped in whole: never half written."""

    def fill(tmp):
        save_pretrained(tmp, model, tokenizer, tensors)
        if state is not None:
            save_state(tmp, state)

    write_directory(directory, fill)


def resolve_checkpoint(directory) -> Path:
    """The checkpoint directory, or the previous one if a crash came in the middle of a swap; a
    name of minilm's shipped checkpoints ("minilm-mini", minilm/pretrained) when no directory of
    that name exists."""
    from minilm.pretrained import shipped

    directory = shipped(directory) or Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if not (directory / CONFIG_FILE).exists() and (old / CONFIG_FILE).exists():
        return old
    return directory


def from_pretrained(path, **config_changes):
    """Rebuild a model from a checkpoint directory (config.json + model.safetensors), minilm's or
    a Hugging Face one (BERT, GPT-2, BART; see minilm/interop).

    `config_changes` override config fields that do not change the weights' shapes
    (for example `attn_impl="math"` or `dropout=0.0`). The model is returned in eval mode.
    """
    path = resolve_checkpoint(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    from minilm import interop

    if interop.is_hf_checkpoint(path):
        return require_finite(interop.load_hf_model(path, **config_changes), path)
    from minilm import peft

    if (path / peft.SPEC_FILE).is_file():
        model = load_adapter(path, **config_changes)
        peft.merge(model)  # LoRA folds into the weights for inference
        return model.eval()
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a minilm checkpoint (missing {name})")
    config = ModelConfig.load(path / CONFIG_FILE)
    if config_changes:
        config = config.replace(**config_changes)
    model = build_model(config)
    try:
        require_fitting_tensors(model, path / MODEL_FILE, path / CONFIG_FILE)
        load_model(model, path / MODEL_FILE, strict=True)
    except (RuntimeError, SafetensorError) as e:
        raise ValueError(f"{path / MODEL_FILE}: weights do not fit {path / CONFIG_FILE}: {e}") from None
    return require_finite(model, path / MODEL_FILE).eval()


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def require_fitting_tensors(model, file, config_file) -> None:
    """The tensors of a safetensors file are those of `model` (names and shapes, one line saying
    how they differ when they do), each floating-point: loading would cast an int or bool tensor
    into a float weight without a word. Reads the header only."""
    from safetensors import safe_open

    state = model.state_dict()
    own = {name: list(t.shape) for name, t in state.items()}
    twins = {}  # tied tensors (one storage under several names) are stored once, under any of them
    for name, t in state.items():
        twins.setdefault(t.data_ptr(), []).append(name)
    shapes = {}
    with safe_open(file, "pt") as f:
        for name in f.keys():
            tensor = f.get_slice(name)
            if tensor.get_dtype() not in FLOAT_DTYPES:
                raise ValueError(f"{file}: tensor {name} is {tensor.get_dtype()}; a weight must be floating-point ({', '.join(FLOAT_DTYPES)})")
            shapes[name] = list(tensor.get_shape())
    others = [n for n in own if n in shapes and shapes[n] != own[n]]
    missing = sorted(names[0] for names in twins.values() if not any(n in shapes for n in names))
    unexpected = sorted(set(shapes) - set(own))
    problems = []
    if others:
        n = others[0]
        problems.append(f"{len(others)} of other shapes (first {n}: {shapes[n]} in the file, {own[n]} for the config)")
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    if problems:
        raise ValueError(f"{file}: weights do not fit {config_file}: tensors " + "; ".join(problems))


def require_finite(model, source):
    """The model, if every weight is a finite number; else an error naming the first tensor that
    holds NaN or inf (a damaged file, or a run saved after it diverged)."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            what = "NaN" if torch.isnan(t).any() else "inf"
            raise ValueError(f"{source}: tensor {name} holds {what} values (the file is damaged, or training had diverged when it was saved)")
    return model


def load_adapter(path, **config_changes):
    """The model of an adapter checkpoint, unmerged: its base checkpoint's weights, the adapter's
    modules in place and its trained tensors loaded."""
    from minilm import peft

    path = Path(path)
    spec = peft.PeftSpec.load(path / peft.SPEC_FILE)
    if not Path(spec.base).is_dir():
        raise FileNotFoundError(f"{path / peft.SPEC_FILE}: its base checkpoint {spec.base} is not there (the adapter holds only its own weights)")
    config = ModelConfig.load(path / CONFIG_FILE)
    if config_changes:
        config = config.replace(**config_changes)
    model, _ = init_model(config, spec.base)
    peft.apply(model, spec)
    load_into(model, path)
    return model


def load_into(model, path, load=None) -> None:
    """Load a checkpoint directory's tensors into `model` in place: all of them, or for an adapter
    checkpoint its trained tensors into a model that carries the same adapter. `load(state,
    strict)` replaces model.load_state_dict (a sharded model loads full tensors its own way)."""
    load = load or model.load_state_dict
    from minilm import peft

    path = resolve_checkpoint(path)
    if (path / peft.SPEC_FILE).is_file():
        tensors = load_file(path / peft.WEIGHTS_FILE)
        expected = set(peft.trained_tensors(model))
        if set(tensors) != expected:
            raise ValueError(f"{path / peft.WEIGHTS_FILE}: its tensors do not fit the model's adapter "
                             f"(missing {sorted(expected - set(tensors))[:3]}, unexpected {sorted(set(tensors) - expected)[:3]})")
        load(tensors, strict=False)
    else:
        state = from_pretrained(path).state_dict()
        _, prefix = kept_model(model)
        if prefix:  # a pretraining wrapper: the kept network's tensors under its name, the helpers' beside
            if not (path / HELPERS_FILE).is_file():
                raise ValueError(f"{path}: no {HELPERS_FILE} with the weights trained beside the model ({type(model).__name__}'s "
                                 f"{prefix[:-1]} alone was saved here)")
            state = _with_aliases(model, {**{prefix + n: t for n, t in state.items()}, **load_file(path / HELPERS_FILE)})
        load(state, strict=True)


def load_weights(path) -> dict:
    """The tensors of a checkpoint directory under minilm's names (a Hugging Face one's mapped)."""
    path = resolve_checkpoint(path)
    from minilm import interop

    if interop.is_hf_checkpoint(path):
        return interop.load_hf_state(path)[1]
    return from_pretrained(path).state_dict()  # every name of a tied tensor, as the model has them


def init_model(config: ModelConfig, init: str | Path | None):
    """A model for `config`; with `init`, every tensor of that checkpoint whose name and shape fit
    is copied in (the backbone, and the pooler where it exists). `init` may be a Hugging Face
    checkpoint directory (BERT, GPT-2, BART): its names are mapped first. Returns (model, new tensor names)."""
    model = build_model(config)
    if init is None:
        return model, sorted(model.state_dict())
    weights = load_weights(init)
    own = model.state_dict()
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith(("transformer.", "encoder.")) for k in fitting):
        raise ValueError(f"{init}: no backbone weights fit this model (is it a {config.arch} checkpoint?)")
    model.load_state_dict(fitting, strict=False)
    return model, sorted(k for k in own if k not in fitting and not _tied_copy(model, k, fitting))


def _tied_copy(model, name: str, loaded: dict) -> bool:
    """True if `name` is a tied alias of a loaded tensor (an LM head sharing the token embedding)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    return p is not None and any(params.get(k) is p for k in loaded)
