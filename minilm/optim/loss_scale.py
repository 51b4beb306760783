"""Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, "Mixed Precision Training").

fp16 gradients underflow to zero below about 6e-8. Multiplying the loss by a large scale S makes
every gradient S times larger (the chain rule is linear), keeping small gradients representable;
the optimizer then sees g = (grad of S * loss) / S. S adapts:

    after backward:  if any gradient is inf or nan:  skip this update, S <- S / 2
                     else: unscale g <- g / S, step; after `interval` good steps in a row, S <- 2 S

The weights stay fp32 ("master weights"); only the autocast forward runs in fp16. bf16 has fp32's
exponent range and needs no scaling.
"""

import torch


class DynamicLossScaler:
    def __init__(self, scale: float = 2.0**16, interval: int = 2000, min_scale: float = 1.0):
        self.scale, self.interval, self.min_scale = scale, interval, min_scale
        self.good_steps = 0

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    @torch.no_grad()
    def unscale(self, parameters) -> bool:
        """Divide every gradient by S in place; return False (and halve S) if one is not finite."""
        grads = [p.grad for p in parameters if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            self.scale = max(self.scale / 2, self.min_scale)
            self.good_steps = 0
            return False
        for g in grads:
            g.div_(self.scale)
        self.good_steps += 1
        if self.good_steps % self.interval == 0:
            self.scale *= 2
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
