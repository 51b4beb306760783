"""Stochastic gradient descent with momentum, written out (Robbins & Monro 1951; Polyak 1964;
Sutskever et al. 2013 for the Nesterov form). Constructor, state and results are those of
torch.optim.SGD.

For each parameter theta with gradient g = grad J(theta):

    g <- g + lambda * theta                      L2 weight decay, added to the gradient
    b <- g                                       at the first step (the momentum buffer)
    b <- mu * b + (1 - tau) * g                  afterwards (mu momentum, tau dampening)
    d <- g + mu * b  (Nesterov)   or   d <- b   (classical momentum)   or   d <- g  (mu = 0)
    theta <- theta - lr * d                      plain SGD: theta_{t+1} = theta_t - lr * grad J(theta_t)

`foreach=False` runs that loop one tensor at a time, as written above; `foreach=True` (the
default) runs the same arithmetic on all tensors of a group at once with torch._foreach_* ops,
which saves Python overhead. Both give the same numbers (tests/test_optim.py).
"""

import torch

from minilm.optim.base import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *, maximize=False, foreach=None):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _update(self, theta, group):
        """The update of one tensor, line by line as in the module docstring."""
        lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        g = -theta.grad if group["maximize"] else theta.grad
        if wd != 0:
            g = g.add(theta, alpha=wd)  # g <- g + lambda theta
        if mu != 0:
            state = self.state[theta]
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = g.clone()  # b <- g
            else:
                b.mul_(mu).add_(g, alpha=1 - tau)  # b <- mu b + (1 - tau) g
            g = g.add(b, alpha=mu) if group["nesterov"] else b  # d
        theta.add_(g, alpha=-lr)  # theta <- theta - lr d

    def _update_foreach(self, params, group):
        """The same update on a list of tensors of one device and dtype at once."""
        lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if mu != 0:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            old = [i for i, b in enumerate(bufs) if b is not None]
            if old:  # b <- mu b + (1 - tau) g
                torch._foreach_mul_([bufs[i] for i in old], mu)
                torch._foreach_add_([bufs[i] for i in old], [grads[i] for i in old], alpha=1 - tau)
            for i, p in enumerate(params):
                if bufs[i] is None:  # the first step: b <- g
                    bufs[i] = self.state[p]["momentum_buffer"] = grads[i].clone()
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=mu)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)
