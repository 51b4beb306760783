"""Training across processes, launched by torchrun: data parallel (DDP) or fully sharded (FSDP).

    torchrun --nproc_per_node N train.py ...                                  N processes, this machine
    torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id JOB train.py ...            M machines, N processes each

torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE (and where to meet); `setup()` joins
them into one process group: gloo on CPUs, NCCL on CUDA. A plain `python train.py` is a world of one
and none of this runs.

The split of the work (N ranks, rank r):

    the global batch of step t       the same on every rank: drawn from (seed, t), as in one process
    rank r trains on                 part r of its rows cut in N (no row on two ranks)
    rank r's loss                    L_r = N * sum_{i in part r} l_i / n,   n = targets in the global batch
    DDP's all-reduce                 g = (1/N) sum_r grad L_r = grad (sum_i l_i / n)

so the N ranks take exactly the step that one process takes on the whole batch (up to the order of
the floating-point sums; tests/test_distributed.py holds the weights equal within 1e-5). During the
first k - 1 micro-batches of a step gradients are not synchronised (`no_sync`), only after the last.

FSDP (`--fsdp`, FSDP2's `fully_shard` on every block and on the whole model): each rank keeps 1/N of
every parameter, gradient and optimizer moment, gathers a block's full weights just before using it
and reduce-scatters its gradients after. The hand-written optimizers run unchanged on the shards
(DTensors). Checkpoints always hold plain full tensors, so a run saved by N ranks loads in one
process and resumes in any number of them.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    fsdp: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, draws the progress bar and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def evaluates(self) -> bool:
        """Rank 0 evaluates; with FSDP every rank does (a sharded model's forward needs them all)."""
        return self.main or self.fsdp


def launched() -> bool:
    """Started by torchrun (or another launcher that sets WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device, fsdp: bool = False) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns this process's World and its device
    (cuda:LOCAL_RANK on GPUs). Outside torchrun: a world of one, the device unchanged."""
    if not launched():
        if fsdp:
            print("notice: --fsdp shards across processes; run under torchrun (a single process trains unsharded)")
        return World(), device
    rank, size, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # NCCL for CUDA tensors; gloo beside it for the small CPU ones (loss sums, metrics)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank, fsdp), device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rows_of(batch: dict, world: World) -> dict:
    """This rank's part of the global batch: its rows cut in world.size nearly equal parts."""
    if not world.distributed:
        return batch
    rows = len(next(iter(batch.values())))
    if rows < world.size:
        raise ValueError(f"a global batch of {rows} rows cannot feed {world.size} ranks: raise --batch-size")
    return {k: v.tensor_split(world.size)[world.rank] for k, v in batch.items()}


class Apply(nn.Module):
    """`net(fn, *args)` = fn(model, *args), through this module's forward.

    DDP arms its gradient all-reduce, and FSDP gathers the weights it does not shard per block (the
    embeddings, heads and final norm), in the forward of the module they wrap. An objective calls
    more than `model.forward` (the MLM head at masked positions only, NSP from the pooled state),
    so they wrap this module, whose forward runs the whole objective."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(self.model, *args)


def wrap(model, world: World):
    """The module a training step calls as net(loss_fn, batch): `Apply(model)`, inside DDP, or
    sharded in place by FSDP2 (every Transformer block, then the rest). Under DDP `model` stays
    usable on its own (the parameters are shared); under FSDP its parameters become this rank's
    shards, and a forward pass must go through the wrapper (Trainer.call)."""
    net = Apply(model)
    if not world.distributed:
        return net
    if world.fsdp:
        from torch.distributed.fsdp import fully_shard

        from minilm.model.blocks import Block

        for module in list(model.modules()):
            if isinstance(module, Block):
                fully_shard(module)
        fully_shard(net)
        return net
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [world.local_rank] if next(model.parameters()).device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids)


@contextlib.contextmanager
def main_first(world: World):
    """Rank 0 runs the block first (writes token shards, trains a tokenizer); the others wait, then
    run it (and find rank 0's work to reuse)."""
    if world.distributed and not world.main:
        dist.barrier()
    yield
    if world.distributed and world.main:
        dist.barrier()


@contextlib.contextmanager
def gradient_sync(net, world: World, sync: bool):
    """Inside the block, backward all-reduces (DDP) or reduce-scatters (FSDP) the gradients only if
    `sync`: accumulation micro-batches before the last of a step keep theirs local."""
    if world.distributed and world.fsdp:
        net.set_requires_gradient_sync(sync)
        yield
    elif world.distributed and not sync:
        with net.no_sync():
            yield
    else:
        yield


def all_sum(value: float, world: World) -> float:
    """The sum of `value` over all ranks (the value itself in a world of one)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)


def broadcast_json(obj, world: World):
    """Rank 0's `obj` (anything JSON can write) on every rank: sent as UTF-8 text, never pickled."""
    if not world.distributed:
        return obj
    data = json.dumps(obj).encode() if world.main else b""
    size = torch.tensor([len(data)], dtype=torch.long)
    dist.broadcast(size, 0)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if world.main else torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(buf, 0)
    return json.loads(bytes(buf.tolist()).decode())


def decorrelate_rng(world: World, step: int) -> None:
    """Give ranks 1..N-1 torch generators of their own, so that their dropout masks differ from
    rank 0's (every rank starts from the same seed, or from the one state a checkpoint holds)."""
    if world.distributed and not world.main:
        torch.manual_seed(torch.initial_seed() + 1_000_003 * world.rank + step)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


# -- full tensors in and out of a sharded model ----------------------------------------------------
def is_sharded(t) -> bool:
    return type(t).__name__ == "DTensor"


def full_model_state(model) -> dict:
    """The plain state dict of a model, sharded or not. With FSDP every rank must call it (the
    shards are gathered); it returns full CPU tensors."""
    if not any(is_sharded(p) for p in model.parameters()):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_model_state(model, state: dict, strict: bool = True) -> None:
    """Load a plain state dict into a model, sharded or not (every rank loads the same tensors)."""
    if not any(is_sharded(p) for p in model.parameters()):
        model.load_state_dict(state, strict=strict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def full_optimizer_state(optimizer) -> dict:
    """The optimizer's state dict with every sharded tensor gathered whole (every rank must call it)."""
    state = optimizer.state_dict()
    state["state"] = {i: {k: (v.full_tensor().cpu() if is_sharded(v) else v) for k, v in s.items()}  # one tensor at a time on the device
                      for i, s in state["state"].items()}
    return state


def shard_optimizer_state(optimizer, state: dict) -> dict:
    """A full optimizer state dict cut to this rank's shards, for the sharded parameters it belongs to."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(state, state={})
    for i, s in state["state"].items():
        p = params[int(i)]
        if is_sharded(p):
            s = {k: (distribute_tensor(v, p.device_mesh, p.placements) if torch.is_tensor(v) and v.shape == p.shape else v)
                 for k, v in s.items()}
        out["state"][i] = s
    return out
