"""Learning-rate schedules: the multiplier f(s) of the peak learning rate at step s = 0, 1, ...

Every schedule but "constant" warms up linearly over the first W steps, f(s) = (s + 1) / W, so the
first update already moves (Hugging Face's schedules start at 0 and waste that step). Then, with
p = (s - W) / (S - W) the progress through the remaining steps of S in all and floor the final
multiplier:

    constant       f(s) = 1                                      (no warmup)
    linear         f(s) = floor + (1 - floor) * (1 - p)
    cosine         f(s) = floor + (1 - floor) * (1 + cos(pi * p)) / 2
    inverse_sqrt   f(s) = sqrt(W / (s + 1))                      (Vaswani et al. 2017; no floor, no end)
"""

import math


def constant(step: int, warmup: int, total: int, floor: float) -> float:
    return 1.0


def _warmup(step: int, warmup: int) -> float:
    return (step + 1) / warmup


def _progress(step: int, warmup: int, total: int) -> float:
    return min(1.0, (step - warmup) / max(1, total - warmup))


def linear(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return _warmup(step, warmup)
    return floor + (1.0 - floor) * (1.0 - _progress(step, warmup, total))


def cosine(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return _warmup(step, warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup, total)))


def inverse_sqrt(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return _warmup(step, warmup)
    return math.sqrt(max(warmup, 1) / (step + 1))


SCHEDULES = {"constant": constant, "linear": linear, "cosine": cosine, "inverse_sqrt": inverse_sqrt}


def lr_at(name: str, step: int, peak: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """The learning rate at `step`: peak * f(step) for the schedule `name`."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return peak * SCHEDULES[name](step, warmup, total, floor)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
