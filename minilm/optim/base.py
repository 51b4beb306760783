"""What every hand-written optimizer shares: `step()` walks the parameter groups and hands each
tensor to the readable `_update(theta, group)`, or, with foreach (the default), each list of
tensors of one device and dtype to `_update_foreach(params, group)`, which does the same
arithmetic with torch._foreach_* ops (they take lists of one device and dtype), or, with
foreach="compiled", the list to `_step_compiled`: the same update as one loop per tensor generated
by torch.compile (kernels/adam.py, for Adam and AdamW; the foreach path for SGD). Adam and AdamW
first try `_update_flat`: parameters that lie end to end in one buffer (minilm/optim/flat.py)
are updated as that one buffer."""

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
            else:
                for same in by_device_and_dtype(params):
                    if self._update_flat(same, group):
                        continue
                    if group["foreach"] == "compiled":
                        self._step_compiled(same, group)
                    else:
                        self._update_foreach(same, group)
        return loss

    def _update_flat(self, params, group) -> bool:
        """The update of `params` laid end to end in one buffer (minilm/optim/flat.py), when the
        optimizer has such a path and they are; False otherwise."""
        return False

    def _update(self, theta, group):
        raise NotImplementedError

    def _update_foreach(self, params, group):
        raise NotImplementedError

    def _step_compiled(self, params, group):
        """The update as compiled loops (kernels/); the foreach path for an optimizer that has none."""
        for same in by_device_and_dtype(params):
            self._update_foreach(same, group)
