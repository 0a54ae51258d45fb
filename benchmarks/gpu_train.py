"""GPU training throughput and MFU of our training step for the 125m and TinyLlama-1.1B presets, compile on and off.

    torchrun --standalone --nproc-per-node=8 benchmarks/gpu_train.py [--presets 125m,tinyllama-1.1b]
        [--seq-len 2048] [--batch 125m=16,tinyllama-1.1b=8] [--steps 20] [--warmup 5] [--compile on,off]
        [--ac off] [--doc-mask off] [--peak-flops 989e12]
    .venv/bin/python benchmarks/gpu_train.py --tiny          # CPU smoke test of this script (seconds)

Same code path as `python -m tasks train`: `models.parallelize` (activation checkpointing, torch.compile per
block, FSDP2 with MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) on more than one GPU, bf16
autocast over an unsharded model on one), `Trainer.step` (gradient clipping, non-finite check, fused
AdamW). Data are random token ids (the loader is not the bottleneck and this keeps the benchmark free of
I/O). MFU = (6N + 12·L·d·T) · tokens/s / (peak FLOP/s · GPUs); target ≥ 55% on H100 (TinyLlama reported
56% on A100s). `--tiny` shrinks every preset to 2 layers of width 64 on the CPU, for testing the script.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from models import Llama, build_config  # noqa: E402
from models.parallelize import parallelize  # noqa: E402
from tasks.train import ctx_mesh  # noqa: E402
from tasks.train.trainer import Trainer, build_optimizer, setup_distributed  # noqa: E402

TINY = {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 128}


def bench(preset: str, batch: int, compile: bool, args, ctx) -> dict:
    cfg = build_config(preset, args.vocab, **(TINY if args.tiny else {}))
    cfg.max_seq_len = max(cfg.max_seq_len, args.seq_len)
    torch.manual_seed(0)
    model = Llama(cfg).to(ctx.device)
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else None
    layout = parallelize(model, ctx_mesh(ctx.device, ctx.world_size) if ctx.world_size > 1 else None, dtype,
                         activation_checkpointing=args.ac == "on", compile=compile)
    trainer = Trainer(model, build_optimizer(model, 3e-4, 0.1, (0.9, 0.95)), grad_clip=1.0, nonfinite="skip",
                      amp_dtype=layout.autocast_dtype, device=ctx.device,
                      doc_mask_eot=cfg.vocab_size - 1 if args.doc_mask == "on" else None)
    g = torch.Generator(device=ctx.device).manual_seed(ctx.rank)
    x = torch.randint(0, cfg.vocab_size, (batch, args.seq_len), device=ctx.device, generator=g)
    y = torch.randint(0, cfg.vocab_size, (batch, args.seq_len), device=ctx.device, generator=g)
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    for i in range(args.warmup):  # includes compilation
        trainer.step([(x, y)], 3e-4, i)
    sync()
    warmup_s = time.perf_counter() - t
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(args.steps):
        res = trainer.step([(x, y)], 3e-4, i)
    sync()
    dt = time.perf_counter() - t
    tok_s = batch * args.seq_len * ctx.world_size * args.steps / dt
    mfu = cfg.flops_per_token(args.seq_len) * tok_s / (args.peak_flops * ctx.world_size)
    mem = torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else float("nan")
    del trainer, model
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    precision = "fp32" if dtype is None else "bf16 FSDP2-MP" if layout.fsdp else "bf16 autocast"
    return {"preset": preset, "params": cfg.num_params(), "compile": compile, "precision": precision, "batch": batch,
            "tok_s": tok_s, "tok_s_gpu": tok_s / ctx.world_size, "mfu": mfu, "mem": mem, "warmup_s": warmup_s,
            "loss": res.loss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="125m,tinyllama-1.1b")
    ap.add_argument("--batch", default="125m=16,tinyllama-1.1b=8", help="micro-batch per GPU, PRESET=N,...")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", default="on,off", help="on, off or on,off (a row each)")
    ap.add_argument("--ac", default="off", choices=["on", "off"], help="activation checkpointing per block")
    ap.add_argument("--doc-mask", default="off", choices=["on", "off"])
    ap.add_argument("--peak-flops", type=float, default=989e12, help="per GPU; H100 SXM bf16 dense = 989e12")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny shapes, seq 64, vocab 512, 2 steps")
    args = ap.parse_args()
    if args.tiny:
        args.device, args.seq_len, args.vocab, args.steps, args.warmup = "cpu", 64, 512, 2, 1
        args.batch = ",".join(f"{p}=2" for p in args.presets.split(","))
    ctx = setup_distributed(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    batches = dict((k, int(v)) for k, v in (kv.split("=") for kv in args.batch.split(",")))
    rows = [bench(p, batches.get(p, 8), c == "on", args, ctx)
            for p in args.presets.split(",") for c in args.compile.split(",")]
    if ctx.rank == 0:
        name = torch.cuda.get_device_name() if ctx.device.type == "cuda" else "CPU"
        print(f"\n{ctx.world_size} × {name}, seq {args.seq_len}, activation checkpointing {args.ac}, doc mask "
              f"{args.doc_mask}, {args.steps} timed steps after {args.warmup} warm-up, peak {args.peak_flops:.3g} "
              f"FLOP/s per device{' (--tiny shapes)' if args.tiny else ''}\n")
        cols = [("preset", 15), ("params", 8), ("compile", 7), ("precision", 13), ("batch", 5), ("tokens/s", 10),
                ("tok/s/GPU", 10), ("MFU", 6), ("vs 55% target", 13), ("peak GiB", 8), ("warm-up s", 9)]
        print("| " + " | ".join(f"{c:<{w}}" for c, w in cols) + " |")
        print("|" + "|".join("-" * (w + 2) for _, w in cols) + "|")
        for r in rows:
            print(f"| {r['preset']:<15} | {r['params'] / 1e6:>7.1f}M | {'on' if r['compile'] else 'off':<7} | "
                  f"{r['precision']:<13} | {r['batch']:>5} | {r['tok_s']:>10,.0f} | {r['tok_s_gpu']:>10,.0f} | "
                  f"{100 * r['mfu']:>5.1f}% | {r['mfu'] / 0.55:>12.2f}× | {r['mem']:>8.1f} | {r['warmup_s']:>9.1f} |")
    dist.barrier()
    if ctx.created:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
