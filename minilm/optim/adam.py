"""Adam and AdamW, written out (Kingma & Ba 2015; Loshchilov & Hutter 2019). Constructor, state
and results are those of torch.optim.Adam and torch.optim.AdamW.

For each parameter theta with gradient g at step t = 1, 2, ...:

    g <- g + lambda * theta                    Adam: L2 weight decay, added to the gradient
    theta <- theta - lr * lambda * theta       AdamW: decoupled weight decay (g left alone)
    m <- beta1 * m + (1 - beta1) * g           first moment: a running mean of gradients
    v <- beta2 * v + (1 - beta2) * g^2         second moment: a running mean of squares
    m_hat = m / (1 - beta1^t)                  bias correction: m and v start at 0
    v_hat = v / (1 - beta2^t)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

With amsgrad (Reddi et al. 2018) v_hat uses the running maximum of v instead of v.
The two differ in one line: where the weight decay goes. With Adam, lambda * theta is divided by
sqrt(v_hat) like the rest of the gradient, so weights with large gradients are decayed less;
AdamW shrinks every weight by the same factor (1 - lr * lambda).

`foreach=False` runs the update one tensor at a time, as written above; `foreach=True` (the
default) runs the same arithmetic on all tensors of a group at once with torch._foreach_* ops.
Both give the same numbers (tests/test_optim.py).
"""

import math

import torch

from minilm.optim.base import Optimizer


class Adam(Optimizer):
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *, maximize=False, foreach=None):
        name = type(self).__name__
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"{name}: lr, eps and weight_decay must be >= 0, got lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{name}: betas must lie in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _state(self, theta, amsgrad: bool) -> dict:
        state = self.state[theta]
        if not state:
            state["step"] = torch.tensor(0.0)  # t, a tensor as in torch.optim
            state["exp_avg"] = torch.zeros_like(theta, memory_format=torch.preserve_format)  # m
            state["exp_avg_sq"] = torch.zeros_like(theta, memory_format=torch.preserve_format)  # v
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(theta, memory_format=torch.preserve_format)  # max of v
        return state

    def _update(self, theta, group):
        """The update of one tensor, line by line as in the module docstring."""
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        state = self._state(theta, group["amsgrad"])
        g = -theta.grad if group["maximize"] else theta.grad
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"].item()
        if wd != 0:
            if self.decoupled_weight_decay:
                theta.mul_(1 - lr * wd)  # AdamW: theta <- theta - lr lambda theta
            else:
                g = g.add(theta, alpha=wd)  # Adam: g <- g + lambda theta
        m.lerp_(g, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
        if group["amsgrad"]:
            v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        bias1, bias2 = 1 - beta1**t, 1 - beta2**t
        denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)  # sqrt(v_hat) + eps
        theta.addcdiv_(m, denom, value=-lr / bias1)  # theta <- theta - lr m_hat / (sqrt(v_hat) + eps)

    def _update_foreach(self, params, group):
        """The same update on a list of tensors of one device and dtype at once."""
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        states = [self._state(p, group["amsgrad"]) for p in params]
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        if wd != 0:
            if self.decoupled_weight_decay:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        del grads  # free g + lambda theta (Adam) before sqrt(v) allocates: the memory is reused
        if group["amsgrad"]:
            v_max = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(v_max, v)
            v = v_max
        ts = [t.item() for t in steps]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in ts])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, [-lr / (1 - beta1**t) for t in ts])


class AdamW(Adam):
    """Adam with decoupled weight decay: theta <- theta - lr * lambda * theta, then the Adam step."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *, maximize=False, foreach=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach)
