"""train: Llama-style pretraining with FSDP2 under torchrun."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import FieldProblem, Section


class ModelChoice(Section):
    preset: Literal["10m", "50m", "125m", "tinyllama-1.1b", "gpt2-124m"] = "10m"
    """A preset from models/presets.py: 10m, 50m, 125m, tinyllama-1.1b, gpt2-124m."""
    overrides: dict[str, int | float | bool] = {}
    """Fields of the preset's ModelConfig to change, e.g. {n_layer: 4} (names and the resulting shape are
    checked by `python -m tasks validate`; vocab_size comes from the tokenizer)."""

    @field_validator("overrides")
    @classmethod
    def _no_vocab(cls, v: dict) -> dict:
        if "vocab_size" in v:
            raise ValueError("must not set vocab_size: the model takes it from the tokenizer (tokenizer.vocab_size)")
        return v


class TrainConfig(Section):
    model: ModelChoice = ModelChoice()
    nproc_per_node: int = Field(1, ge=1)
    """Processes per node for torchrun (read by dvc.yaml's cmd)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA (NCCL) when a GPU is visible, else CPU (gloo)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype; weights, optimizer and gradient reduction stay fp32. With FSDP2 it is its
    MixedPrecisionPolicy (bf16 parameters in all-gathers and compute), on one unsharded rank autocast.
    auto: bfloat16 on GPU, float32 on CPU."""
    fsdp: Literal["auto", "always"] = "auto"
    """auto: FSDP2 when there is more than one rank, a plain module on one (same losses, less per-step cost);
    always: FSDP2 on one rank too."""
    compile: bool = False
    """torch.compile each transformer block (pays a compile cost up front)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them (less memory, ~1/3 more compute)."""
    async_checkpoint: bool = False
    """Write checkpoints with dcp.async_save in a background thread; training goes on after a copy to CPU memory."""
    prefetch: int = Field(2, ge=0)
    """Batches the loader prepares ahead in a background thread (0: none)."""
    doc_mask: bool = False
    """Attention stays inside each document of a packed window (no attending across the end-of-text token)."""
    init_from: str | None = None
    """Start from existing weights: a model folder (data/model), a Hugging Face Llama folder, a DCP checkpoint,
    or models:/<name>@<alias> / models:/<name>/<version>. Shapes must match train.model (docs/train.md)."""
    cpu_threads: int | None = Field(None, ge=1)
    """Intra-op threads on CPU (torch.set_num_threads); null keeps torch's default (one per core). On a
    machine shared with other jobs 1 can be several times faster than 2 (spinning OpenMP threads)."""
    seq_len: int = Field(256, ge=8)
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per rank per forward/backward."""
    global_batch_tokens: int = Field(16 * 256, ge=8)
    """Tokens per optimizer step over all ranks; gradient accumulation makes up the rest."""
    max_steps: int = Field(300, ge=1)
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate after linear warmup (TinyLlama: 4e-4)."""
    min_lr: float = Field(3e-4, ge=0)
    """Floor of the cosine decay, reached at max_steps (TinyLlama: 4e-5)."""
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.95, gt=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    nonfinite: Literal["skip", "stop"] = "skip"
    """What to do when the loss or gradient norm is NaN/inf: skip the optimizer step, or stop."""
    eval_every: int = Field(100, ge=1)
    """Validation loss and bits per byte every this many steps (and after the last step)."""
    eval_batches: int = Field(8, ge=1)
    """Micro-batches per rank in one validation pass (the same ones every time)."""
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    """Complete checkpoints kept; older ones are deleted after each save."""
    checkpoint_dir: str = "checkpoints"
    """DCP checkpoints go to `<checkpoint_dir>/<run fingerprint>/step_NNNNNN/`; a run with the same
    fingerprint (model, data, training params) resumes from its latest complete one."""
    resume: bool = True
    """Resume automatically from the latest complete checkpoint of this configuration."""
    seed: int = 1337
    peak_flops: float = Field(1e12, gt=0)
    """Peak FLOP/s of one device, for MFU (H100 bf16 dense: 989e12)."""

    @model_validator(mode="after")
    def _batch(self):
        if self.min_lr > self.lr:
            raise FieldProblem("min_lr", f"({self.min_lr}) must not exceed lr ({self.lr})")
        per_micro = self.seq_len * self.micro_batch_size
        if self.global_batch_tokens % per_micro:
            raise FieldProblem("global_batch_tokens", f"({self.global_batch_tokens}) must be a multiple of seq_len × "
                                                      f"micro_batch_size ({self.seq_len} × {self.micro_batch_size})")
        if self.global_batch_tokens % (per_micro * self.nproc_per_node):
            fits = [n for n in range(1, self.global_batch_tokens // per_micro + 1)
                    if self.global_batch_tokens % (per_micro * n) == 0]
            raise FieldProblem("nproc_per_node", (
                f"({self.nproc_per_node}) does not divide the batch: global_batch_tokens ({self.global_batch_tokens}) "
                f"must be a multiple of seq_len × micro_batch_size × nproc_per_node ({self.seq_len} × "
                f"{self.micro_batch_size} × {self.nproc_per_node} = {per_micro * self.nproc_per_node}); "
                f"nproc_per_node can be {fits} here, or change micro_batch_size"))
        if self.warmup_steps > self.max_steps:
            raise FieldProblem("warmup_steps", f"({self.warmup_steps}) must not exceed max_steps ({self.max_steps}): "
                                               "the learning rate would never reach its peak nor decay")
        return self

    @model_validator(mode="after")
    def _init_source_fits(self):
        """A local init_from must exist and have the configured shape (vocab_size is checked against the shards
        at run time); a registry URI must be well formed (its shape is checked before the first step)."""
        if self.init_from is None:
            return self
        from tasks.train.init import InitError, check_shape, inspect_local, is_registry_uri, parse_registry_uri

        try:
            if is_registry_uri(self.init_from):
                parse_registry_uri(self.init_from)
                return self
            from models import build_config

            configured = build_config(self.model.preset, **self.model.overrides).to_dict()
            check_shape(inspect_local(self.init_from), configured, check_vocab=False)
        except InitError as e:
            raise ValueError(f"init_from: {e}") from None
        return self
