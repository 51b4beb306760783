"""Dynamic int8 quantisation of the Linear layers, for CPU inference.

Each weight row (output channel) is stored as 8-bit integers with one float scale,

    W_int8[o, :] = round(W[o, :] / s_o),    s_o = max_i |W[o, i]| / 127,

and at run time each input is quantised the same way from its own range ("dynamic": no
calibration data), the product is taken in integer arithmetic and rescaled to float:

    y = (s_x * s_W) * (x_int8 @ W_int8^T) + b

(Jacob et al. 2018; PyTorch's fbgemm/onednn kernels). Weights shrink 4x and the matrix products
run on the CPU's int8 units. Embeddings, norms and a language-model head tied to the embedding
table stay in float32: only `nn.Linear` modules are replaced.
"""

import warnings

import torch
from torch import nn

MODES = ("int8",)


def quantize(model: nn.Module, mode: str = "int8") -> nn.Module:
    """A copy of `model` for CPU inference with its nn.Linear layers in dynamic int8."""
    if mode not in MODES:
        raise ValueError(f"unknown quantisation {mode!r} (choose from {', '.join(MODES)})")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("--quantize int8 runs on the CPU only; use --device cpu")
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # pragma: no cover - depends on the torch build
        raise RuntimeError(f"this torch build has no dynamic quantisation ({e})") from e
    with warnings.catch_warnings():  # torch announces the move of its quantisation API to torchao
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model.float().eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return quantized


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes held by the weights of the Linear layers, float or quantised (for a size report)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
        elif hasattr(m, "_packed_params") and hasattr(m, "weight") and callable(m.weight):
            total += m.weight().numel()  # one byte per int8 weight
    return total
