"""What every hand-written optimizer shares: `step()` walks the parameter groups and hands each
tensor to the readable `_update(theta, group)`, or, with foreach (the default), each list of
tensors of one device and dtype to `_update_foreach(params, group)`, which does the same
arithmetic with torch._foreach_* ops (they take lists of one device and dtype), or, with
foreach="compiled", the list to `_step_compiled`: the same update as one loop per tensor generated
by torch.compile (kernels/adam.py, for Adam and AdamW; the foreach path for SGD)."""

import torch


def by_device_and_dtype(tensors) -> list[list]:
    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


class Optimizer(torch.optim.Optimizer):
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["foreach"] is False:
                for theta in params:
                    self._update(theta, group)
            elif group["foreach"] == "compiled":
                self._step_compiled(params, group)
            else:
                for same in by_device_and_dtype(params):
                    self._update_foreach(same, group)
        return loss

    def _update(self, theta, group):
        raise NotImplementedError

    def _update_foreach(self, params, group):
        raise NotImplementedError

    def _step_compiled(self, params, group):
        """The update as compiled loops (kernels/); the foreach path for an optimizer that has none."""
        for same in by_device_and_dtype(params):
            self._update_foreach(same, group)
