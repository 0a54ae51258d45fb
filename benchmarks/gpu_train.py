"""GPU training throughput and MFU of our training step for the 125m and TinyLlama-1.1B presets.

    torchrun --standalone --nproc-per-node=8 benchmarks/gpu_train.py [--presets 125m,tinyllama-1.1b]
        [--seq-len 2048] [--batch 125m=16,tinyllama-1.1b=8] [--steps 20] [--warmup 5] [--no-compile]
        [--peak-flops 989e12] [--precision autocast,fsdp-bf16]

Same code path as `python -m tasks train`: FSDP2 (`models.parallelize`), `Trainer.step` (gradient clipping,
non-finite check, fused AdamW), torch.compile per block. Data are random token ids (the loader is not
the bottleneck and this keeps the benchmark free of I/O). Precision `autocast` is what the train stage
uses (fp32 weights, bf16 autocast); `fsdp-bf16` is FSDP2's MixedPrecisionPolicy (bf16 all-gather and
compute, fp32 gradient reduction). MFU = (6N + 12·L·d·T) · tokens/s / (peak FLOP/s · GPUs); target ≥ 55%
on H100 (TinyLlama reported 56% on A100s). `--device cpu` runs a smoke test of the script itself.
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


def bench(preset: str, batch: int, seq_len: int, precision: str, args, ctx) -> dict:
    cfg = build_config(preset, args.vocab)
    cfg.max_seq_len = max(cfg.max_seq_len, seq_len)
    torch.manual_seed(0)
    model = Llama(cfg).to(ctx.device)
    if args.compile:
        for block in model.layers:
            block.compile()
    bf16 = ctx.device.type == "cuda"
    parallelize(model, ctx_mesh(ctx.device, ctx.world_size),
                param_dtype=torch.bfloat16 if precision == "fsdp-bf16" and bf16 else None)
    trainer = Trainer(model, build_optimizer(model, 3e-4, 0.1, (0.9, 0.95)), grad_clip=1.0, nonfinite="skip",
                      amp_dtype=torch.bfloat16 if precision == "autocast" and bf16 else None, device=ctx.device)
    g = torch.Generator(device=ctx.device).manual_seed(ctx.rank)
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=ctx.device, generator=g)
    y = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=ctx.device, generator=g)
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    for i in range(args.warmup):  # includes compilation
        trainer.step([(x, y)], 3e-4, i)
    sync()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(args.steps):
        res = trainer.step([(x, y)], 3e-4, i)
    sync()
    dt = time.perf_counter() - t
    tok_s = batch * seq_len * ctx.world_size * args.steps / dt
    mfu = cfg.flops_per_token(seq_len) * tok_s / (args.peak_flops * ctx.world_size)
    mem = torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else float("nan")
    del trainer, model
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return {"preset": preset, "params": cfg.num_params(), "precision": precision, "batch": batch, "tok_s": tok_s,
            "tok_s_gpu": tok_s / ctx.world_size, "mfu": mfu, "mem": mem, "loss": res.loss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="125m,tinyllama-1.1b")
    ap.add_argument("--batch", default="125m=16,tinyllama-1.1b=8", help="micro-batch per GPU, PRESET=N,...")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", default="autocast,fsdp-bf16")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="per GPU; H100 SXM bf16 dense = 989e12")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = ap.parse_args()
    ctx = setup_distributed(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    batches = dict((k, int(v)) for k, v in (kv.split("=") for kv in args.batch.split(",")))
    rows = [bench(p, batches.get(p, 8), args.seq_len, prec, args, ctx)
            for p in args.presets.split(",") for prec in args.precision.split(",")]
    if ctx.rank == 0:
        name = torch.cuda.get_device_name() if ctx.device.type == "cuda" else "CPU"
        print(f"\n{ctx.world_size} × {name}, seq {args.seq_len}, compile={args.compile}, {args.steps} timed steps, "
              f"peak {args.peak_flops:.3g} FLOP/s per device\n")
        print(f"| {'preset':<15} | {'params':>8} | {'precision':<10} | {'batch':>5} | {'tokens/s':>10} | "
              f"{'tok/s/GPU':>10} | {'MFU':>6} | {'vs 55% target':>13} | {'peak GiB':>8} |")
        print("|" + "|".join("-" * (w + 2) for w in (15, 8, 10, 5, 10, 10, 6, 13, 8)) + "|")
        for r in rows:
            print(f"| {r['preset']:<15} | {r['params'] / 1e6:>7.1f}M | {r['precision']:<10} | {r['batch']:>5} | "
                  f"{r['tok_s']:>10,.0f} | {r['tok_s_gpu']:>10,.0f} | {100 * r['mfu']:>5.1f}% | "
                  f"{r['mfu'] / 0.55:>12.2f}× | {r['mem']:>8.1f} |")
    dist.barrier()
    if ctx.created:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
