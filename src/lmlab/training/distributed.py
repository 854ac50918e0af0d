"""Training on several processes with torch.distributed, as started by `torchrun`.

    torchrun --nproc_per_node 8 -m lmlab train ...                       # one machine, 8 GPUs
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29400 --rdzv_id JOB -m lmlab train ...  # two machines, the same line on each

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `Parallel.from_environment` joins the process group (NCCL on
CUDA, gloo on CPU). Each rank draws the same global batch indices from the same seeded generator and keeps
its own slice, so a run on N processes sees exactly the batches of one process with N times the batch size
(and reads only its share of the windows). Gradients are averaged by DistributedDataParallel, or sharded
with FSDP2 (`fully_shard`, `train.parallel=fsdp`) when a model's weights and optimizer state don't fit one
device. Rank 0 alone logs and writes files; every rank reads the checkpoint on resume. Each rank seeds its
dropout with seed + rank, and every rank's random state goes into the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmlab.errors import LmlabError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Parallel:
    """One process's place in the job; the defaults describe a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    mode: str = "none"  # none | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP over more than one process: each rank holds a shard of the weights, not all of them."""
        return self.mode == "fsdp" and self.world_size > 1

    @classmethod
    def from_environment(cls, device_name: str, mode: str = "ddp") -> Parallel:
        """Join the process group torchrun describes (or a single-process Parallel without torchrun)."""
        if not launched_by_torchrun():
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        if device_name == "cuda" and not use_cuda:
            raise LmlabError("--device cuda was asked for, but no CUDA device is available")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank=rank, local_rank=local_rank, world_size=world_size, mode=mode)

    def device(self, resolved: torch.device) -> torch.device:
        """Each rank on its own GPU (LOCAL_RANK), or the CPU."""
        if resolved.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return resolved

    # -- the model ------------------------------------------------------------------------------------------

    def wrap(self, model: nn.Module, device: torch.device, compile_model: bool) -> nn.Module:
        """The module the training step calls. `model` itself stays the plain module that checkpoints and
        evaluation use (DDP shares its parameters; FSDP shards them in place)."""
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            # Shard each repeated block, then the rest: a block's weights are gathered just before it runs
            # and freed after, so peak memory holds one block's full weights at a time.
            for module in list(model.modules()):
                if isinstance(module, nn.ModuleList):
                    for block in module:
                        fully_shard(block)
            fully_shard(model)
            return torch.compile(model) if compile_model else model
        wrapped = torch.compile(model) if compile_model else model
        if self.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        return wrapped

    def no_sync(self, wrapped: nn.Module, sync: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
        if sync or not isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return wrapped.no_sync()

    # -- data and collectives -------------------------------------------------------------------------------

    def local_batch(self, dataset, batch_size: int, generator: torch.Generator, packed: bool = False):
        """This rank's `batch_size` rows of a global batch of batch_size * world_size; `packed`: this rank's
        `batch_size` examples of it, packed into rows (LinesDataset.sample_packed)."""
        if packed:
            return dataset.sample_packed(batch_size, generator, self.rank, self.world_size)
        input_ids, labels = dataset.sample_batch(batch_size * self.world_size, generator)
        rows = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        return input_ids[rows], labels[rows]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (stopping must be unanimous, or the others hang)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    # -- checkpoints ----------------------------------------------------------------------------------------

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        """(model state, optimizer state) as plain full tensors on the CPU; with FSDP every rank must call
        this (it gathers the shards), and rank 0 gets the result."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = _retie(model, get_model_state_dict(model, options=options))
        optim_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer else {}
        return model_state, optim_state

    def full_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's whole state dict as CPU tensors, on every rank: under FSDP every rank must call this
        (the shards are gathered collectively) and every rank gets the result (early stopping keeps the best
        weights on each, to restore them on each)."""
        if not self.sharded:  # copied name by name, so tied names are tied again, as a weights file has them
            return _retie(model, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        gathered = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return _retie(model, {k: v.detach().to("cpu", copy=True) for k, v in gathered.items()})

    def load_full_weights(self, model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Put a full state dict (full_weights') into the model, into each rank's shards under FSDP."""
        if self.sharded:
            self.load_full_state(model, None, weights, None)
        else:
            model.load_state_dict(weights)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (one process: [value])."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def seed_rank(self, seed: int) -> None:
        """Seed torch's generators (dropout) with `seed + rank` on a rank of several: the ranks draw their
        own masks, as the rows of one big batch would, instead of the same ones. The model was built before,
        under `seed` alone, so every rank starts from the same weights. One process keeps its stream."""
        if self.world_size > 1:
            torch.manual_seed(seed + self.rank)

    def load_full_state(self, model: nn.Module, optimizer, model_state, optim_state) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, strict=False)  # tied weights are stored once
        set_model_state_dict(model, model_state, options=options)
        if optimizer is not None and optim_state:
            set_optimizer_state_dict(model, optimizer, optim_state, options=options)


def _retie(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gathering copies each name apart; point tied names (a GPT's embedding and head) at one tensor again."""
    tied: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(param), []).append(name)
    for names in tied.values():
        present = [n for n in names if n in state]
        for name in present[1:]:
            state[name] = state[present[0]]
    return state


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A plain copy of `tensor`; of an FSDP shard (a DTensor), the whole tensor, gathered collectively."""
    if hasattr(tensor, "full_tensor"):
        return tensor.full_tensor().detach().cpu()
    return tensor.detach().clone()


def copy_full_(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor into `target`, into this rank's shard of it when `target` is a DTensor."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(target.device), target.device_mesh, target.placements)
    target.copy_(full)
