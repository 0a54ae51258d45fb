"""train: token shards → a Llama-style model, FSDP2 under torchrun, resumable from DCP checkpoints.

`torchrun --standalone --nproc-per-node=N -m tasks train --in shards=... --in tokenizer=... --out data/model`
runs `run_train` on every rank. Rank 0 logs per-step metrics to the stage's MLflow run and writes
`data/model/` (model.safetensors, config.json, meta.json, tokenizer files, train_curve.csv).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from models import Llama, build_config
from models.parallelize import parallelize
from tasks.atomic import atomic_dir, atomic_write_json
from tasks.hashing import file_sha256
from tasks.resume import describe_changes, key_digest, read_key, stage_key
from tasks.tracking import log_metrics, set_tags

from . import checkpoint
from .init import InitError, InitSource, check_shape, check_tokenizer, load_weights, resolve
from .loader import Manifest, Prefetcher, ShardError, TokenLoader
from .trainer import Trainer, build_optimizer, lr_at, setup_distributed, token_bytes_tensor
from .weights import save_weights

log = logging.getLogger("tinyfoundry.train")

# params that do not change what is trained: a run differing only in these resumes the same checkpoints
CADENCE_KEYS = {"checkpoint_every", "keep_checkpoints", "log_every", "checkpoint_dir", "eval_every", "eval_batches",
                "peak_flops", "compile", "nonfinite", "resume", "nproc_per_node",
                # how the same math is laid out and fed (tested to give identical losses)
                "fsdp", "activation_checkpointing", "async_checkpoint", "prefetch"}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_key(cfg, model_cfg, shards: Path, tokenizer_dir: Path | None, init: dict | None = None) -> dict:
    """What a training run's checkpoints depend on (tasks/resume.py): the train stage's code (its dvc.yaml
    deps, `models/` included), the shards' and tokenizer's contents, the params that change training, the
    model shape and the identity of the starting weights (a moved alias or rewritten source folder starts a
    new run). Collective: rank 0 hashes, the others receive its key."""
    key = None
    if not dist.is_initialized() or dist.get_rank() == 0:
        params = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in CADENCE_KEYS}
        inputs = {"shards": shards, **({"tokenizer": tokenizer_dir} if tokenizer_dir else {})}
        key = stage_key("train", {**params, "model_config": model_cfg.to_dict(), **({"init": init} if init else {})},
                        inputs)
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [key]
        dist.broadcast_object_list(box, src=0)
        key = box[0]
    return key


def explain_fresh_start(checkpoint_dir: Path, ckpt_root: Path, key: dict) -> None:
    """Say why training starts at step 0 when checkpoints of other runs exist (changed code, inputs or params)."""
    others = sorted((p for p in checkpoint_dir.iterdir() if p != ckpt_root and checkpoint.latest(p)),
                    key=lambda p: checkpoint.latest(p).stat().st_mtime, reverse=True) if checkpoint_dir.is_dir() else []
    if others:
        newest = checkpoint.latest(others[0])
        log.info("train: starting from step 0: the latest checkpoint (%s) is from a run that cannot be resumed: %s; "
                 "%d checkpoint folder(s) of other runs stay under %s (delete them when no longer needed)",
                 newest, describe_changes(read_key(others[0] / checkpoint.KEY_FILE), key), len(others),
                 checkpoint_dir)


def train_tokens_per_source(manifest: Manifest) -> dict[str, int]:
    """The data mix the model trains on: training tokens per source, summed over the shards."""
    totals: dict[str, int] = {}
    for shard in manifest.raw.get("shards", []):
        if shard.get("split") == "train":
            for source, n in (shard.get("tokens_per_source") or {}).items():
                totals[source] = totals.get(source, 0) + int(n)
    return totals


def load_token_bytes(tokenizer_dir: Path | None):
    """UTF-8 byte length of every token id (tasks.tokenizer), for bits per byte; None skips bpb with a warning."""
    if tokenizer_dir is None or not Path(tokenizer_dir).exists():
        log.warning("no tokenizer folder given: validation bits per byte is not computed")
        return None
    try:
        from tasks.tokenizer import load_tokenizer, token_byte_lengths
        return token_byte_lengths(load_tokenizer(tokenizer_dir))
    except Exception as e:  # noqa: BLE001 — bpb is a metric, never a reason to fail training
        log.warning("could not load the tokenizer from %s (%s: %s): validation bits per byte is not computed",
                    tokenizer_dir, type(e).__name__, e)
        return None


def resolve_dtype(cfg, device: torch.device) -> torch.dtype | None:
    if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def run_train(cfg, inputs: dict[str, Path], output: Path) -> dict:
    if "shards" not in inputs:
        raise ValueError("train needs --in shards=<folder with manifest.json and *.bin>")
    ctx = setup_distributed(cfg.device)
    try:
        return _train(cfg, Path(inputs["shards"]), inputs.get("tokenizer"), Path(output), ctx)
    finally:
        if ctx.created and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, shards: Path, tokenizer_dir: Path | None, output: Path, ctx) -> dict:
    rank, world, device = ctx.rank, ctx.world_size, ctx.device
    if cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    is_main = rank == 0
    manifest = Manifest.read(shards)
    model_cfg = build_config(cfg.model.preset, manifest.vocab_size, **cfg.model.overrides)
    if cfg.seq_len > model_cfg.max_seq_len:
        raise ValueError(f"train.seq_len ({cfg.seq_len}) exceeds the model's max_seq_len ({model_cfg.max_seq_len}); "
                         "lower seq_len or override model.max_seq_len")
    per_micro = cfg.seq_len * cfg.micro_batch_size * world
    if cfg.global_batch_tokens % per_micro:
        raise ValueError(f"train.global_batch_tokens ({cfg.global_batch_tokens}) must be a multiple of "
                         f"seq_len × micro_batch_size × world size ({per_micro}) at world size {world}")
    accum = cfg.global_batch_tokens // per_micro

    init = resolve_init(cfg, manifest, model_cfg, tokenizer_dir, rank) if cfg.init_from else None

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank, then sharded
    model = Llama(model_cfg).to(device)
    n_params = model.num_params()
    if init is not None:
        load_weights(init, model)
        log.info("initialised the weights from %s (%s, sha256 %s…)", init.uri, init.kind, init.sha256[:12])
    dtype = resolve_dtype(cfg, device)
    shard = world > 1 or cfg.fsdp == "always"
    layout = parallelize(model, ctx_mesh(device, world) if shard else None, dtype, shard=shard,
                         activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    trainer = Trainer(model, optimizer, grad_clip=cfg.grad_clip, nonfinite=cfg.nonfinite,
                      amp_dtype=layout.autocast_dtype, device=device,
                      doc_mask_eot=manifest.eot_id if cfg.doc_mask else None)
    token_loader = TokenLoader(shards, "train", cfg.micro_batch_size, cfg.seq_len, rank, world, seed=cfg.seed,
                               device=device)
    train_loader = Prefetcher(token_loader, cfg.prefetch) if cfg.prefetch else token_loader
    val_loader = None
    try:
        val_loader = TokenLoader(shards, "val", cfg.micro_batch_size, cfg.seq_len, rank, world, shuffle=False,
                                 device=device)
    except ShardError as e:
        log.warning("no validation: %s", e)
    token_bytes = token_bytes_tensor(load_token_bytes(tokenizer_dir), model_cfg.vocab_size, device)

    lineage = init.identity() if init is not None else None
    key = run_key(cfg, model_cfg, shards, tokenizer_dir, lineage)
    fingerprint = key_digest(key)[:12]
    ckpt_root = Path(cfg.checkpoint_dir) / fingerprint
    if is_main:
        atomic_write_json(ckpt_root / checkpoint.KEY_FILE, key)
    checkpointer = checkpoint.Checkpointer(ckpt_root, cfg.keep_checkpoints, async_save=cfg.async_checkpoint)
    meta_base = {"fingerprint": fingerprint, "model_config": model_cfg.to_dict(), "preset": cfg.model.preset,
                 "params": cfg.model_dump(), "git_commit": git_commit(), "world_size": world,
                 "tokenizer_sha256": manifest.tokenizer_sha256,
                 # what the model registry records of the data (tasks/train/registry.py)
                 "shard_manifest_sha256": file_sha256(shards / "manifest.json"),
                 "train_tokens_per_source": train_tokens_per_source(manifest), "init_from": lineage}
    if is_main and lineage:
        set_tags({f"init_from.{k}": v for k, v in lineage.items() if v})
    step, tokens_seen, curve = 0, 0, []
    resumed_from, resumed_val = None, {}
    if cfg.resume and (last := checkpoint.latest(ckpt_root)) is not None:
        meta, state = checkpoint.load(last, model, optimizer)
        train_loader.load_state_dict(state["loader"])
        step, tokens_seen, curve = meta["step"], meta["tokens_seen"], meta["curve"]
        trainer.skipped_steps = meta.get("skipped_steps", 0)
        resumed_val = meta.get("last_val") or {}
        resumed_from = str(last)
        log.info("resumed from %s: step %d, %d tokens seen (same code, inputs and params)", last, step, tokens_seen)
    else:
        if is_main and cfg.resume:
            explain_fresh_start(Path(cfg.checkpoint_dir), ckpt_root, key)
        torch.manual_seed(cfg.seed + rank)

    if is_main:
        precision = ("fp32" if dtype is None else
                     f"{dtype} via FSDP2 mixed precision" if layout.fsdp else f"{dtype} autocast")
        log.info("model %s: %.2fM params (%s), %d layers, d %d; %d rank(s) on %s, %s, %s%s%s; %d tokens/step "
                 "= %d micro-batches of %d×%d per rank; %d steps; checkpoints in %s", cfg.model.preset,
                 n_params / 1e6, "tied" if model_cfg.tie_embeddings else "untied", model_cfg.n_layer,
                 model_cfg.d_model, world, device, "FSDP2" if layout.fsdp else "unsharded", precision,
                 ", activation checkpointing" if cfg.activation_checkpointing else "",
                 ", document masking" if cfg.doc_mask else "", cfg.global_batch_tokens, accum,
                 cfg.micro_batch_size, cfg.seq_len, cfg.max_steps, ckpt_root)
    flops_per_token = model_cfg.flops_per_token(cfg.seq_len)

    def save_checkpoint():
        meta = {**meta_base, "tokens_seen": tokens_seen, "curve": curve, "skipped_steps": trainer.skipped_steps,
                "last_val": {**last_val, "step": last_val_step} if last_val else resumed_val}
        checkpointer.save(step, model, optimizer, {"loader": train_loader.state_dict()}, meta)

    def validate() -> dict:
        if val_loader is None:
            return {}
        return trainer.evaluate(val_loader, cfg.eval_batches, token_bytes)

    last_val: dict = {}
    last_val_step = 0
    started, window_t, window_tokens = time.time(), time.time(), 0
    last_tok_s = last_mfu = 0.0
    progress = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not is_main, mininterval=5, unit="step")
    while step < cfg.max_steps:
        lr = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        batches = [next(train_loader) for _ in range(accum)]
        res = trainer.step(batches, lr, step)
        step += 1
        tokens_seen += cfg.global_batch_tokens
        window_tokens += cfg.global_batch_tokens
        progress.update(1)
        row = {"step": step, "train_loss": res.loss, "val_loss": None, "lr": lr}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            last_val, last_val_step = validate(), step
            row["val_loss"] = last_val.get("val_loss")
            if last_val and is_main:
                log.info("step %d: validation loss %.4f, bits per byte %s", step, last_val["val_loss"],
                         f"{last_val['val_bpb']:.4f}" if "val_bpb" in last_val else "n/a")
                log_metrics({f"val/{k.removeprefix('val_')}": v for k, v in last_val.items()}, step=step)
        if step % cfg.log_every == 0 or step == cfg.max_steps or row["val_loss"] is not None:
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                dt = time.time() - window_t
                last_tok_s = window_tokens / max(dt, 1e-9)
                last_mfu = flops_per_token * last_tok_s / (cfg.peak_flops * world)
                window_t, window_tokens = time.time(), 0
                if is_main:
                    log.info("step %d/%d: loss %.4f, lr %.2e, grad norm %.3f, %.0f tokens/s, MFU %.2f%%", step,
                             cfg.max_steps, res.loss, lr, res.grad_norm, last_tok_s, 100 * last_mfu)
                    log_metrics({"train/loss": res.loss, "train/lr": lr, "train/grad_norm": res.grad_norm,
                                 "train/tokens_per_s": last_tok_s, "train/mfu": last_mfu}, step=step)
            curve.append(row)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint()
    progress.close()
    checkpointer.wait()
    if cfg.prefetch:
        train_loader.close()
    if not last_val:
        last_val = validate()  # resumed at max_steps: validate the final weights again

    # consolidate the sharded weights (a collective), then rank 0 writes the output folder
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    final_train = next((r["train_loss"] for r in reversed(curve)), None)
    stats = {"step": step, "tokens_seen": tokens_seen, "params": n_params, "world_size": world,
             "final_train_loss": final_train, "final_val_loss": last_val.get("val_loss"),
             "val_bpb": last_val.get("val_bpb"), "skipped_steps": trainer.skipped_steps,
             "tokens_per_s": round(last_tok_s, 1), "mfu": last_mfu, "train_seconds": round(time.time() - started, 2),
             "resumed_from_step": int(Path(resumed_from).name.split("_")[1]) if resumed_from else 0,
             "skipped_shards": len(token_loader.skipped), "fingerprint": fingerprint}
    if is_main:
        write_output(output, full, model_cfg, cfg, stats, meta_base, curve, tokenizer_dir)
        log.info("wrote %s: step %d, val loss %s, val bpb %s", output, step, stats["final_val_loss"], stats["val_bpb"])
    if dist.is_initialized():
        dist.barrier()
    return stats


def resolve_init(cfg, manifest: Manifest, model_cfg, tokenizer_dir: Path | None, rank: int) -> InitSource:
    """Rank 0 resolves `train.init_from` (downloading a registered version, hashing the weights) and checks its
    shape and tokenizer, before any training; the other ranks receive the result (or stop with the error)."""
    found: list = [None]
    if rank == 0:
        try:
            source = resolve(cfg.init_from, Path(cfg.checkpoint_dir) / "init")
            check_shape(source, model_cfg.to_dict())
            check_tokenizer(source, manifest.tokenizer_sha256, tokenizer_dir)
            found[0] = source
        except InitError as e:
            found[0] = InitError(f"train.init_from: {e}")
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(found, src=0)
    if isinstance(found[0], InitError):
        raise found[0]
    return found[0]


def ctx_mesh(device: torch.device, world: int):
    from torch.distributed.device_mesh import init_device_mesh
    return init_device_mesh(device.type, (world,))


def write_output(output: Path, state_dict: dict, model_cfg, cfg, stats: dict, meta_base: dict, curve: list[dict],
                 tokenizer_dir: Path | None) -> None:
    with atomic_dir(output, resume=False) as out:
        save_weights(state_dict, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps({**model_cfg.to_dict(), "preset": cfg.model.preset}, indent=2,
                                                    sort_keys=True) + "\n")
        meta = {**meta_base, **{k: stats[k] for k in ("step", "tokens_seen", "final_train_loss", "final_val_loss",
                                                        "val_bpb", "skipped_steps")}}
        (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["step", "train_loss", "val_loss", "lr"], lineterminator="\n")
        writer.writeheader()
        for row in curve:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        (out / "train_curve.csv").write_text(buf.getvalue())
        if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
            # whole folder under tokenizer/ (tasks.tokenizer.load_tokenizer reads it; its meta.json would clash
            # with ours), plus flat copies of the files that do not clash (HF tokenizer.json etc. beside the weights)
            shutil.copytree(tokenizer_dir, out / "tokenizer")
            for f in sorted(Path(tokenizer_dir).iterdir()):
                if f.is_file() and not (out / f.name).exists():
                    shutil.copy2(f, out / f.name)


__all__ = ["run_train"]
