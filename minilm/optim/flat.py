"""Parameters laid end to end: one buffer for the weights, one for their gradients (the "flat"
layout of Apex's and DeepSpeed's fused optimizers).

An optimizer's update is a few elementwise passes over every parameter (Adam's: about eight). Over
the ~70 tensors of a small Transformer, each pass is ~70 separate loops, each with its dispatch
cost; on a CPU that made a fine-tuning step of the `mini` encoder spend a fifth of its time in
AdamW. With the tensors laid end to end, each pass is one loop over N numbers:

    buffer  [ theta_1 | theta_2 | ... | theta_k ]        every theta_i a view into it
    grads   [ g_1     | g_2     | ... | g_k     ]        every .grad a view; backward adds into them

`flatten_(groups)` lays out the parameters of an optimizer's groups in group order, so each group
is one span of the buffer; `span(tensors)` finds that span again (None when the tensors are not
consecutive views of one buffer, and the optimizer takes its per-tensor path); `gather(states, key)`
lays an optimizer's state (Adam's m and v) out the same way, once. The gradients stay views only
while they are zeroed in place (`zero_grad_`), never set to None. Nothing here changes a number:
elementwise arithmetic gives the same bits on one long tensor as on its pieces.
"""

import torch

from minilm.optim.base import by_device_and_dtype


def views(buffer: torch.Tensor, like: list) -> list[torch.Tensor]:
    """Consecutive views of `buffer` shaped like the tensors of `like`."""
    out, offset = [], 0
    for t in like:
        out.append(buffer[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return out


def span(tensors: list) -> torch.Tensor | None:
    """The 1-D tensor that `tensors` cover end to end, in order, when they are contiguous views of
    one storage with nothing between them; else None."""
    if not tensors or any(t is None or not t.is_contiguous() for t in tensors):
        return None
    first = tensors[0]
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    end = offset
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage or t.storage_offset() != end or t.dtype != first.dtype:
            return None
        end += t.numel()
    return first.detach().as_strided((end - offset,), (1,), offset)


def gather(states: list[dict], key: str) -> torch.Tensor:
    """One buffer of which states[i][key] are consecutive views: found, or made the first time
    (the values copied in and each entry pointed at its view)."""
    tensors = [s[key] for s in states]
    buffer = span(tensors)
    if buffer is None:
        buffer = torch.cat([t.reshape(-1) for t in tensors])
        for s, view in zip(states, views(buffer, tensors)):
            s[key] = view
    return buffer


@torch.no_grad()
def flatten_(groups: list[dict]) -> list[torch.Tensor]:
    """Move the parameters of `groups` (an optimizer's param_groups) into one buffer per device and
    dtype, in group order, and give each a .grad that is a view into a gradient buffer (holding
    the gradient it had, else zeros). The parameters stay the same objects (modules, optimizer
    and tied weights still hold them); their values are unchanged. Returns the gradient buffers,
    for `zero_grad_`."""
    params = list({id(p): p for g in groups for p in g["params"]}.values())  # a tied parameter once
    grads = []
    for same in by_device_and_dtype(params):
        data = torch.cat([p.detach().reshape(-1) for p in same])
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in same])
        for p, d, g in zip(same, views(data, same), views(grad, same)):
            p.data = d
            p.grad = g
        grads.append(grad)
    return grads


def zero_grad_(grads: list[torch.Tensor]) -> None:
    """Zero the gradient buffers in place, so that every .grad stays a view into them."""
    for g in grads:
        g.zero_()
