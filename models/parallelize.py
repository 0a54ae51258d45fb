"""How the model is laid out for training, in torchtitan's order: activation checkpointing, then
torch.compile, then FSDP2 (`fully_shard` each block, then the root).

FSDP2 is applied when it has something to do: more than one rank, or `shard=True`. On one rank a plain
module computes the same numbers without FSDP's per-step cost (parameter copies in, gradient copies out,
DTensor dispatch in the optimizer and clipping), which on small CPU models was a fifth of the step.
Mixed precision follows from that choice, as in torchtitan: with FSDP2 its MixedPrecisionPolicy
(bf16 parameters for compute and all-gathers, fp32 gradient reduction, fp32 master weights); without
it, `torch.autocast` over the fp32 module (`autocast_dtype` says which).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from .llama import Llama


@dataclass(frozen=True)
class Layout:
    fsdp: bool
    """The model is sharded with FSDP2 (its parameters are DTensors)."""
    autocast_dtype: torch.dtype | None
    """Run forward passes under torch.autocast with this dtype (None: no autocast)."""


def apply_activation_checkpointing(model: Llama) -> None:
    """Recompute each block's activations in backward instead of keeping them (full AC per block). Parameter
    names are unchanged in DCP/`get_state_dict` state dicts, which strip the wrapper's prefix."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.layers):
        # no RNG in the model (no dropout), so there is no RNG state to preserve for the recomputation
        model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_fsdp(model: Llama, mesh: DeviceMesh, param_dtype: torch.dtype | None,
               reshard_after_forward: bool = True) -> None:
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if mesh.size() == 1:  # one rank holds the whole model anyway: skip the re-gather before backward
        reshard_after_forward = False
    for i, block in enumerate(model.layers):
        # the last block's params are needed again at once by backward: keep them unsharded (torchtitan)
        last = i == len(model.layers) - 1
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward and not last)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)


def parallelize(model: Llama, mesh: DeviceMesh | None, dtype: torch.dtype | None = None, *,
                shard: bool | None = None, activation_checkpointing: bool = False, compile: bool = False,
                reshard_after_forward: bool = True) -> Layout:
    """Prepare `model` in place for training on `mesh`. `dtype=torch.bfloat16` computes in bf16 with fp32
    master weights (None: fp32). `shard=None` shards only when the mesh has more than one rank."""
    fsdp = (mesh is not None and mesh.size() > 1) if shard is None else shard
    if fsdp and mesh is None:
        raise ValueError("sharding needs a device mesh")
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        for block in model.layers:
            block.compile()
    if fsdp:
        apply_fsdp(model, mesh, dtype, reshard_after_forward)
    return Layout(fsdp=fsdp, autocast_dtype=None if fsdp else dtype)
