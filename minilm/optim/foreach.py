"""Grouping for the fast paths: torch._foreach_* ops take lists of tensors of one device and dtype."""


def by_device_and_dtype(tensors) -> list[list]:
    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())
