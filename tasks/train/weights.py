"""Full (unsharded) model weights as one safetensors file: the train stage's output and every registered
checkpoint use the same writer, so equal weights give equal bytes and the same sha256.

`checkpoint_weights` reads the model part of a DCP checkpoint on one process (no process group): DCP reshards
whatever the ranks saved into the plain tensors of a freshly built model.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """fp32, contiguous, on CPU, keys sorted: a canonical file for one set of weights."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in sorted(state_dict.items())}
    save_file(tensors, str(path), metadata={"format": "pt"})


def checkpoint_weights(checkpoint_dir: str | Path, model_config) -> dict[str, torch.Tensor]:
    """The model weights saved in a DCP checkpoint (`step_*/`), as a plain CPU state dict."""
    import torch.distributed.checkpoint as dcp

    from models import Llama

    with torch.device("meta"):
        model = Llama(model_config)
    model.to_empty(device="cpu")  # storage only: every value is overwritten by the load
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(checkpoint_dir), no_dist=True)
    return state["model"]
