"""What the three families share: applying a name-map table, and checking configs.

How a name-map table turns a minilm state dict into a Hugging Face one and back:

A table (one per family: bert.py, gpt2.py, bart.py) is a list of rules

    (minilm name, Hugging Face name)            the same tensor under another name
    (minilm name, Hugging Face name, how)       ... changed on the way, as `how` says

A name is a module path, where {i} stands for a block index; the rule then covers every tensor
of that module (".weight", ".bias"), the suffix carried over unchanged. A name may also spell out
one tensor in full ("mlm.decoder.bias"). Two rules never cover the same tensor, except the parts
of one fused tensor (GPT-2's c_attn holds W^Q, W^K and W^V side by side).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class How:
    """What happens to a tensor between the two names (read from minilm's side).

    transpose: the Hugging Face matrix is stored (in, out), an nn.Linear's (out, in) transposed
               (GPT-2's Conv1D); biases are not touched.
    part, parts: the minilm tensor is slice `part` of `parts` equal slices of the Hugging Face
               tensor along the output dimension (a fused q, k, v projection).
    row:       the Hugging Face tensor is a (1, N) row of the minilm vector (N,) (BART's
               final_logits_bias).
    """

    transpose: bool = False
    part: int = 0
    parts: int = 1
    row: bool = False


COPY = How()
CONV1D = How(transpose=True)
ROW = How(row=True)


def fused(part: int, parts: int = 3) -> How:
    """Slice `part` of a fused Conv1D projection (q=0, k=1, v=2)."""
    return How(transpose=True, part=part, parts=parts)


def _regex(pattern: str) -> re.Pattern:
    # a module name matches itself followed by ".<tensor>", a full tensor name only itself
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<suffix>(\..+)?)")


class Table:
    """The rules of one family, compiled for matching in both directions."""

    def __init__(self, rules):
        self.rules = []
        for rule in rules:
            minilm, hf, how = rule if len(rule) == 3 else (*rule, COPY)
            self.rules.append((minilm, hf, how, _regex(minilm), _regex(hf)))

    @staticmethod
    def _fill(pattern: str, m: re.Match) -> str:
        name = pattern.replace("{i}", m.group("i")) if "{i}" in pattern else pattern
        return name + m.group("suffix")

    def to_minilm(self, hf_state: dict) -> tuple[dict, list[str]]:
        """Hugging Face tensors -> (minilm tensors, the Hugging Face names no rule covers)."""
        out, unused = {}, []
        for key, t in hf_state.items():
            hits = [(minilm, how, m) for minilm, _, how, _, hf_re in self.rules if (m := hf_re.fullmatch(key))]
            if not hits:
                unused.append(key)
            for minilm, how, m in hits:
                out[self._fill(minilm, m)] = _from_hf(t, how)
        return out, unused

    def to_hf(self, state: dict) -> tuple[dict, list[str]]:
        """minilm tensors -> (Hugging Face tensors, the minilm names no rule covers)."""
        out, unused, pieces = {}, [], {}
        for key, t in state.items():
            hits = [(hf, how, m) for _, hf, how, minilm_re, _ in self.rules if (m := minilm_re.fullmatch(key))]
            if not hits:
                unused.append(key)
            for hf, how, m in hits:
                name = self._fill(hf, m)
                if how.parts > 1:
                    pieces.setdefault(name, (how, {}))[1][how.part] = t
                else:
                    out[name] = _to_hf(t, how)
        for name, (how, parts) in pieces.items():
            if sorted(parts) != list(range(how.parts)):
                raise ValueError(f"{name}: only parts {sorted(parts)} of {how.parts} are present")
            out[name] = _to_hf(torch.cat([parts[k] for k in range(how.parts)], dim=0), how)
        return out, unused


def _from_hf(t, how: How):
    if how.row:
        t = t.reshape(-1)
    if how.transpose and t.dim() == 2:
        t = t.t()  # (in, out) -> (out, in)
    if how.parts > 1:
        t = t.chunk(how.parts, dim=0)[how.part]
    return t.contiguous()


def _to_hf(t, how: How):
    if how.transpose and t.dim() == 2:
        t = t.t()  # (out, in) -> (in, out)
    if how.row:
        t = t.reshape(1, -1)
    return t.detach().contiguous().clone()


# -- configs ----------------------------------------------------------------------------------------
def unsupported(source: str, field: str, value, why: str):
    """Refuse a Hugging Face config field that minilm cannot represent, naming file and field."""
    raise ValueError(f"{source}: {field}={value!r} is not supported ({why})")


# The research switches of minilm's config (docs/variants.md) at the values BERT, GPT-2 and BART have.
PLAIN_VARIANTS = dict(n_kv_head=None, qk_norm=False, parallel_block=False, share_layers=False, attn_window=None, pair_encoding="cross")


def require(config, family: str, **expected) -> None:
    """Refuse a minilm config that the Hugging Face family cannot represent, naming the field."""
    for name, value in expected.items():
        if getattr(config, name) != value:
            raise ValueError(f"ModelConfig.{name}={getattr(config, name)!r}: a {family} checkpoint needs {name}={value!r}")


def ff_size(inner: int | None, n_embd: int) -> int | None:
    """minilm's d_ff from a Hugging Face inner size: None when it is the default 4 * n_embd."""
    return None if inner is None or inner == 4 * n_embd else inner
