"""The training step, learning-rate schedule, validation and process-group setup (no file I/O here)."""
from __future__ import annotations

import logging
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from models import document_ids

log = logging.getLogger("tinyfoundry.train")


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/inf and `train.nonfinite` is `stop`."""


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created: bool
    """True when this call created the process group (and so must destroy it)."""


def setup_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group (NCCL on GPU, gloo on CPU); outside torchrun start a 1-process group,
    so FSDP2 runs the same code path at world size 1."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, device_id=dev if use_cuda else None)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        created = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, created)


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to max_lr over `warmup` steps, then cosine decay to min_lr at `total` (0-based step)."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    fused: bool = True) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings (dim ≥ 2), none on norm gains (nanoGPT). The fused kernel
    (CPU and CUDA) saves a dispatch per parameter per op, which matters with DTensor parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    skipped: bool


class Trainer:
    """One optimizer step = `len(batches)` micro-batches of gradient accumulation on every rank.
    `amp_dtype`: forward under torch.autocast (an unsharded model; FSDP2 does mixed precision itself).
    `doc_mask_eot`: attention only within documents, which start at this end-of-text token id."""

    def __init__(self, model, optimizer, *, grad_clip: float, nonfinite: str, amp_dtype: torch.dtype | None,
                 device: torch.device, doc_mask_eot: int | None = None):
        self.model, self.optimizer = model, optimizer
        self.grad_clip, self.nonfinite = grad_clip, nonfinite
        self.device = device
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        self.doc_mask_eot = doc_mask_eot
        self.skipped_steps = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
        doc_ids = None if self.doc_mask_eot is None else document_ids(x, self.doc_mask_eot)
        with self.autocast():
            return self.model(x, y, reduction=reduction, doc_ids=doc_ids)

    def step(self, batches, lr: float, step: int) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for x, y in batches:
            _, loss = self.forward(x, y)
            (loss / len(batches)).backward()
            loss_sum += loss.detach()
        loss_avg = loss_sum / len(batches)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(loss_avg, op=dist.ReduceOp.SUM)  # gloo has no AVG
            loss_avg /= dist.get_world_size()
        # the total norm is reduced over all ranks, so every rank reaches the same decision below
        norm = _full(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        loss_f, norm_f = loss_avg.item(), norm.item()
        finite = math.isfinite(loss_f) and math.isfinite(norm_f)
        if finite:
            self.optimizer.step()
        elif self.nonfinite == "stop":
            raise NonFiniteError(f"step {step}: loss {loss_f} / gradient norm {norm_f} is not finite; stopping "
                                 "(train.nonfinite: stop). Lower train.lr, or set nonfinite: skip to skip such steps.")
        else:
            self.skipped_steps += 1
            log.warning("step %d: loss %s / gradient norm %s is not finite; optimizer step skipped (%d so far)",
                        step, loss_f, norm_f, self.skipped_steps)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_f, norm_f, not finite)

    @torch.no_grad()
    def evaluate(self, loader, n_batches: int, token_bytes: torch.Tensor | None) -> dict:
        """Mean validation loss over the same `n_batches` micro-batches each time, and bits per byte =
        Σ loss (nats) / (ln 2 · Σ UTF-8 bytes of the target tokens), special tokens (0 bytes) excluded (nanochat)."""
        self.model.eval()
        loader.pos, loader.epoch = 0, 0
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, tokens, loss on byte tokens, bytes
        for _, (x, y) in zip(range(n_batches), loader):
            _, loss = self.forward(x, y, reduction="none")  # (B, T)
            loss = loss.double()
            sums[0] += loss.sum()
            sums[1] += loss.numel()
            if token_bytes is not None:
                nbytes = token_bytes[y]  # (B, T)
                sums[2] += (loss * (nbytes > 0)).sum()
                sums[3] += nbytes.sum()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        s = sums.tolist()
        out = {"val_loss": s[0] / max(s[1], 1), "val_tokens": int(s[1])}
        if token_bytes is not None and s[3] > 0:
            out["val_bpb"] = s[2] / (math.log(2) * s[3])
        return out


def token_bytes_tensor(lengths: np.ndarray | None, vocab_size: int, device) -> torch.Tensor | None:
    if lengths is None:
        return None
    t = torch.zeros(vocab_size, dtype=torch.int64)
    n = min(len(lengths), vocab_size)
    t[:n] = torch.as_tensor(np.asarray(lengths[:n], dtype=np.int64))
    return t.to(device)
