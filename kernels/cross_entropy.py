"""Cross-entropy over a large vocabulary without the full fp32 logits: the LM head and the loss in
chunks of rows, forward and backward.

Notation: N rows (tokens), C channels, V vocabulary.

The reference computes z = h W^T + b, (N, V), upcasts it to fp32 and takes

    L = sum_i [ logsumexp_v z_iv - z_i,y_i ]          (rows with y_i = IGNORE_INDEX excluded)

which holds N x V fp32 numbers at once, and autograd keeps them (and their softmax) for backward:
at N = 8 x 256 tokens and V = 50k that is 400 MB per copy. Here the rows go through in chunks of
`chunk` rows; forward keeps no logits at all (only the sum), and backward recomputes each chunk's
logits and uses

    dL/dz_i = softmax(z_i) - onehot(y_i),   dL/dh_i = dL/dz_i W,   dL/dW = sum_i dL/dz_i^T h_i,
    dL/db = sum_i dL/dz_i,

so the peak is chunk x V numbers instead of N x V, for the price of one more h W^T in backward.
"""

import torch
import torch.nn.functional as F

from minilm.objectives import IGNORE_INDEX


def reference_cross_entropy(h, weight, bias, labels):
    """sum_i CE(h_i W^T + b, y_i) through the full logits: the readable version. h (N, C), labels (N,)."""
    logits = F.linear(h, weight, bias)  # (N, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 upcast, fp64 kept
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


class ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, labels, chunk: int):
        acc = torch.promote_types(h.dtype, torch.float32)  # bf16/fp16 upcast, fp64 kept
        total = torch.zeros((), dtype=acc, device=h.device)
        for s in range(0, h.shape[0], chunk):
            z = F.linear(h[s : s + chunk], weight, bias).to(acc)  # (n, V)
            y = labels[s : s + chunk]
            keep = y != IGNORE_INDEX
            logp = F.log_softmax(z, dim=-1)  # z - logsumexp(z), one fused pass
            total -= (logp.gather(1, y.clamp(min=0)[:, None]).squeeze(1) * keep).sum()
        ctx.save_for_backward(h, weight, bias if bias is not None else torch.empty(0), labels)
        ctx.chunk, ctx.has_bias, ctx.acc = chunk, bias is not None, acc
        device = h.device.type  # backward recomputes the logits under the same autocast as forward (as torch.amp.custom_bwd)
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        return total

    @staticmethod
    def backward(ctx, grad_out):
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return ChunkedCrossEntropy._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        h, weight, bias, labels = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        acc = ctx.acc
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=acc)
        grad_b = torch.zeros(weight.shape[0], dtype=acc, device=h.device) if ctx.has_bias else None
        for s in range(0, h.shape[0], ctx.chunk):
            hs, y = h[s : s + ctx.chunk], labels[s : s + ctx.chunk]
            z = F.linear(hs, weight, bias).to(acc)  # (n, V), recomputed
            dz = F.softmax(z, dim=-1)  # exp(z - logsumexp(z)), one fused pass
            keep = y != IGNORE_INDEX
            dz[torch.arange(len(y), device=y.device)[keep], y[keep]] -= 1.0
            dz *= keep[:, None] * grad_out  # ignored rows contribute nothing
            grad_h[s : s + ctx.chunk] = (dz.to(weight.dtype) @ weight).to(h.dtype)  # (n, C)
            grad_w += dz.t() @ hs.to(acc)  # (V, C)
            if grad_b is not None:
                grad_b += dz.sum(0)
        return grad_h, grad_w.to(weight.dtype), grad_b.to(bias.dtype) if grad_b is not None else None, None, None


def chunked_cross_entropy(h, weight, bias, labels, chunk: int = 1024):
    """The same sum as `reference_cross_entropy`, holding at most chunk x V logits at a time."""
    if h.dim() != 2 or labels.shape != h.shape[:1]:
        raise ValueError(f"expected h (N, C) and labels (N,), got {tuple(h.shape)} and {tuple(labels.shape)}")
    return ChunkedCrossEntropy.apply(h, weight, bias, labels, chunk)
