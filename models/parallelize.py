"""FSDP2 for any world size (1 included): `fully_shard` each transformer block, then the root (torchtitan)."""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from .llama import Llama


def parallelize(model: Llama, mesh: DeviceMesh, param_dtype: torch.dtype | None = None,
                reshard_after_forward: bool = True) -> Llama:
    """Shard `model` in place over `mesh`. `param_dtype=torch.bfloat16` computes in bf16 with fp32 master
    weights and fp32 gradient reduction (FSDP2's MixedPrecisionPolicy); None keeps fp32."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if mesh.size() == 1:  # one rank holds the whole model anyway: skip the re-gather before backward
        reshard_after_forward = False
    for i, block in enumerate(model.layers):
        # the last block's params are needed again at once by backward: keep them unsharded (torchtitan)
        last = i == len(model.layers) - 1
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward and not last)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model
