"""Parameter-efficient fine-tuning: train a few new weights beside a frozen pretrained backbone.

    lora      low-rank updates of chosen linear layers, foldable into them afterwards (lora.py)
    adalora   the same as P diag(lambda) Q, whose ranks move between layers to a budget (adalora.py)
    adapter   a bottleneck network after every attention and feed-forward output (adapters.py)
    prefix    trainable keys and values before the real ones in every self-attention (prefix.py)

`apply(model, spec)` freezes every weight except those named in `spec.trainable` (the freshly
initialised task head), then puts the method's modules in place. The model keeps the spec as
`model.peft`; minilm.checkpoint then saves only the trained tensors (adapter.safetensors) with
adapter_config.json, which names the base checkpoint the adapter sits on, and `from_pretrained`
of such a directory rebuilds the base, adds the adapter and, for (Ada)LoRA, merges it into the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from minilm.files import atomic_write_json
from minilm.model.blocks import Transformer
from minilm.model.norms import LayerNorm, RMSNorm
from minilm.peft.adalora import SVDLinear
from minilm.peft.adapters import AdapterLinear
from minilm.peft.lora import LoRALinear, LowRankLinear
from minilm.peft.prefix import Prefix

METHODS = ("lora", "adalora", "adapter", "prefix")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")  # the backbone's linear layers, by name
SPEC_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter.safetensors"


@dataclass
class PeftSpec:
    method: str
    base: str  # the checkpoint directory that holds the frozen weights
    r: int = 8  # LoRA rank; AdaLoRA's initial rank of each layer
    alpha: float = 16.0  # LoRA scale numerator: updates are scaled by alpha / r
    dropout: float = 0.0  # LoRA dropout on the layer input
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # layers LoRA adapts (Hu et al.: W^Q and W^V)
    adapter_size: int = 64  # bottleneck width m of an adapter
    prefix_length: int = 16  # virtual tokens P of prefix tuning
    trainable: list[str] = field(default_factory=list)  # other tensors trained in full (the new task head)
    target_r: int | None = None  # AdaLoRA: the mean rank per layer its budget ends at

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown parameter-efficient method {self.method!r}; choose one of {', '.join(METHODS)}")
        unknown = [t for t in self.targets if t not in PROJECTIONS]
        if unknown:
            raise ValueError(f"LoRA target {unknown[0]!r} is not a projection of the model; choose from {', '.join(PROJECTIONS)}")

    def save(self, path) -> None:
        atomic_write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path) -> "PeftSpec":
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))


def _backbone(model) -> nn.Module:
    return model.transformer if hasattr(model, "transformer") else model.encoder


def _replace(model, wanted, wrap) -> int:
    """Replace each nn.Linear of the backbone whose own name is in `wanted` by wrap(linear)."""
    count = 0
    for module in list(_backbone(model).modules()):
        for name, child in list(module.named_children()):
            if name in wanted and isinstance(child, nn.Linear):
                setattr(module, name, wrap(child))
                count += 1
    return count


def _owner(model, name: str) -> nn.Module:
    return model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model


def apply(model, spec: PeftSpec) -> None:
    """Freeze the model but `spec.trainable`, add the method's modules (trainable), keep the spec.
    Adapters also train the layer norms' gains and biases, as Houlsby et al. do."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in spec.trainable or (spec.method == "adapter" and isinstance(_owner(model, name), (LayerNorm, RMSNorm))))
    if spec.method in ("lora", "adalora"):
        low_rank = LoRALinear if spec.method == "lora" else SVDLinear
        added = _replace(model, set(spec.targets), lambda linear: low_rank(linear, spec.r, spec.alpha, spec.dropout))
    elif spec.method == "prefix":
        if model.config.layer_heads is not None:
            raise ValueError("--peft prefix keeps n_head virtual heads in every block; this model's blocks were pruned to "
                             f"{model.config.layer_heads} heads (use lora or adapter)")
        added = 0
        for stack in model.modules():
            if isinstance(stack, Transformer):
                c, weight = stack.config, stack.embed.token.weight
                stack.prefix = Prefix(len(stack.blocks), c.n_head, c.head_size, spec.prefix_length, weight.dtype, weight.device)
                added += 1
    else:
        added = _replace(model, {"o_proj", "fc2"}, lambda linear: AdapterLinear(linear, spec.adapter_size))
    if added == 0:
        raise ValueError(f"{spec.method}: no layer of the model matched {spec.targets}")
    model.peft = spec


def trained_tensors(model, state: dict | None = None) -> dict:
    """The tensors an adapter checkpoint holds: every parameter that trains (its value from `state`
    when given: the full tensors of a sharded model)."""
    return {n: (p if state is None else state[n]).detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def merge(model) -> None:
    """Fold every (Ada)LoRA update into its layer (W' = W + alpha/r B A, or + alpha/r P diag(lambda) Q):
    the model becomes a plain one, saved whole from then on. Adapters are not linear in their input
    and stay as they are."""
    if getattr(model, "peft", None) is None or model.peft.method not in ("lora", "adalora"):
        return
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LowRankLinear):
                setattr(module, name, child.merge())
    for p in model.parameters():
        p.requires_grad_(True)
    model.peft = None
