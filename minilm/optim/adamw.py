"""AdamW, written out: the update a student can read, with the constructor and state of torch.optim.AdamW.

For each parameter theta with gradient g at step t (Kingma & Ba 2015; Loshchilov & Hutter 2019):

    theta <- theta - lr * lambda * theta            decoupled weight decay (not added to g)
    m <- beta1 * m + (1 - beta1) * g                first moment: a running mean of gradients
    v <- beta2 * v + (1 - beta2) * g^2              second moment: a running mean of squares
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)      bias correction (m, v start at 0)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)
"""

import math

import torch


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamW: invalid hyper-parameters lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                g = theta.grad
                state = self.state[theta]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(theta)  # m
                    state["exp_avg_sq"] = torch.zeros_like(theta)  # v
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"].item()

                theta.mul_(1 - lr * wd)  # theta <- theta - lr * lambda * theta
                m.lerp_(g, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
                bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)  # sqrt(v_hat) + eps
                theta.addcdiv_(m, denom, value=-lr / bias1)  # theta <- theta - lr m_hat / (sqrt(v_hat) + eps)
        return loss
