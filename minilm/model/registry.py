"""Extension points: the named choices of a ModelConfig, and the decorator that adds one.

    kind         config field  what is registered under a name                         built in
    "attention"  attn_impl     fn(q, k, v, bias, dropout_p, training, is_causal)         math, sdpa
                               -> (B, nh, T, hs); q (B, nh, T, hs), k and v (B, nh, S, hs),
                               bias (B or 1, 1, T, S) added to the scores, or None
    "position"   pos           class(config) -> module(position_ids (T,) or (B, T))      learned, sinusoidal,
                               -> vectors (.., T, C) added to the token embeddings, or     rope, alibi
                               None; optionally module.score_bias(T, S, dtype) ->
                               (1, nh, T, S) added to the attention scores (ALiBi), and
                               `bounded = False` when it has no table of max_seq_len rows
    "norm"       norm          class(n_embd, eps, bias) -> module (.., C) -> (.., C)    layernorm, rmsnorm
    "mlp"        mlp           class(config, inner) -> module (B, T, C) -> (B, T, C)     gelu, gelu_tanh, relu,
                               (inner: the block's pruned inner size, or None)           swiglu, moe

minilm's own modules register their built-ins with the same decorator that a file of yours uses:

    from minilm.model.registry import register

    @register("norm", "scalenorm")
    class ScaleNorm(nn.Module):
        def __init__(self, n_embd, eps=1e-5, bias=True): ...

after which `ModelConfig(norm="scalenorm")` is valid, `build_model` builds it, and the scripts
accept `--norm scalenorm` when given `--plugin my_file.py` (or a module name). An installed package
can name its module in the entry-point group "minilm.plugins"; those are imported the first time
a name is looked up, so a checkpoint whose config.json names the variant loads with no flag.
An attention function that applies the causal mask itself when `is_causal` is True and `bias` is
None (as SDPA does) says so with `fn.handles_causal = True`; the others always get the mask in `bias`.
docs/extending.md shows a whole example (docs/examples/scalenorm.py).

This module imports nothing of minilm: the configuration, at the bottom of the house, validates
against it, and the modules that implement the built-ins are imported by name when first needed.
"""

import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

BUILTIN = {  # kind -> {built-in name: the module that registers it}
    "attention": dict.fromkeys(("math", "sdpa"), "minilm.model.attention"),
    "position": dict.fromkeys(("learned", "sinusoidal", "rope", "alibi"), "minilm.model.embeddings"),
    "norm": dict.fromkeys(("layernorm", "rmsnorm"), "minilm.model.norms"),
    "mlp": {**dict.fromkeys(("gelu", "gelu_tanh", "relu", "swiglu"), "minilm.model.mlp"), "moe": "minilm.model.moe"},
}
FIELD = {"attention": "attn_impl", "position": "pos", "norm": "norm", "mlp": "mlp"}  # the ModelConfig field of each kind
ENTRY_POINT_GROUP = "minilm.plugins"

_registered: dict = {kind: {} for kind in BUILTIN}
_entry_points_loaded = False


def register(kind: str, name: str):
    """Decorator: make `obj` the variant `name` of `kind` (see the table above). A name registered
    twice by different objects is an error, so that two plugins cannot silently replace each other."""
    if kind not in _registered:
        raise ValueError(f"unknown extension point {kind!r}; choose one of {', '.join(_registered)}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"register({kind!r}, {name!r}): the name must be a non-empty string")

    def add(obj):
        old = _registered[kind].get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise ValueError(f"{kind} {name!r} is already registered (by {_qualname(old)}); choose another name")
        _registered[kind][name] = obj
        return obj

    return add


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def names(kind: str) -> tuple:
    """Every name `kind` accepts: the built-ins, then the registered ones (installed plugins included)."""
    _load_entry_points()
    builtin = tuple(BUILTIN[kind])
    return builtin + tuple(n for n in _registered[kind] if n not in builtin)


def lookup(kind: str, name: str):
    """The object registered as `name` of `kind` (importing the built-ins' module when needed)."""
    if name not in _registered[kind]:
        if name in BUILTIN[kind]:
            importlib.import_module(BUILTIN[kind][name])
        else:
            _load_entry_points()
    if name not in _registered[kind]:
        raise ValueError(f"{FIELD[kind]}={name!r}: no {kind} of that name; registered: {', '.join(names(kind))} "
                         f"(a variant of your own: --plugin FILE, see minilm/model/registry.py)")
    return _registered[kind][name]


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def load_plugin(spec: str) -> None:
    """Import a plugin: a Python file (`my_variants.py`) or an importable module name
    (`my_package.variants`); what it registers becomes a choice of the config and the scripts."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"--plugin {spec}: no such file")
        name = f"minilm_plugin_{path.stem}"
        if name in sys.modules:
            return
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        loader.loader.exec_module(module)
    else:
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise ValueError(f"--plugin {spec}: not a file, and no module of that name ({e})") from None
