"""CPU training throughput: our training step (FSDP2 via gloo at world size 1, the code `python -m tasks train`
runs) against a minimal plain PyTorch loop in nanoGPT style (same model class, same batch, AdamW + clipping).

    .venv/bin/python benchmarks/train_cpu.py [--preset 10m] [--seq-len 256] [--batch 16] [--steps 6] [--rounds 3]

Rounds alternate ours / baseline so machine load hits both alike; the table shows median tokens/s and
the median of per-pair ratios ours ÷ baseline (target ≥ 1.0×).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models import Llama, build_config  # noqa: E402
from models.parallelize import parallelize  # noqa: E402
from tasks.train.trainer import Trainer, build_optimizer, setup_distributed  # noqa: E402


def baseline_step(model, opt, x, y, accum):
    """nanoGPT's train.py inner loop, without DDP/AMP (CPU fp32)."""
    for _ in range(accum):
        _, loss = model(x, y)
        (loss / accum).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="10m")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--override", action="append", default=[], metavar="FIELD=INT")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = ap.parse_args()
    overrides = {k: int(v) for k, v in (o.split("=") for o in args.override)}
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args.preset, args.vocab, **overrides)
    ctx = setup_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g)
    y = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g)

    torch.manual_seed(0)
    plain = Llama(cfg)
    plain_opt = build_optimizer(plain, 1e-3, 0.1, (0.9, 0.95), fused=False)  # nanoGPT: fused only on CUDA
    torch.manual_seed(0)
    ours = parallelize(Llama(cfg), __import__("tasks.train", fromlist=["ctx_mesh"]).ctx_mesh(ctx.device, 1))
    trainer = Trainer(ours, build_optimizer(ours, 1e-3, 0.1, (0.9, 0.95)), grad_clip=1.0, nonfinite="skip",
                      amp_dtype=None, device=ctx.device)

    tokens = args.batch * args.seq_len * args.accum
    ours_step = lambda: trainer.step([(x, y)] * args.accum, 1e-3, 0)  # noqa: E731
    base_step = lambda: baseline_step(plain, plain_opt, x, y, args.accum)  # noqa: E731
    ours_step(), base_step()  # warm-up (allocations, optimizer state)
    res = {"ours": [], "baseline": []}
    for r in range(args.rounds * args.steps):
        # single steps, alternating (and alternating who goes first): load changes hit both alike
        pair = [("ours", ours_step), ("baseline", base_step)][:: 1 if r % 2 == 0 else -1]
        for name, fn in pair:
            t = time.perf_counter()
            fn()
            res[name].append(tokens / (time.perf_counter() - t))
    ratios = [a / b for a, b in zip(res["ours"], res["baseline"])]
    print(f"per-pair ratios: {' '.join(f'{q:.2f}' for q in ratios)}", file=sys.stderr)
    ours_med, base_med = statistics.median(res["ours"]), statistics.median(res["baseline"])
    print(f"\nCPU training step, preset {args.preset} ({cfg.num_params() / 1e6:.2f}M params), batch {args.batch}×"
          f"{args.seq_len}, accum {args.accum}, {torch.get_num_threads()} threads, median of {args.rounds * args.steps} "
          f"alternating step pairs; ratio = median of per-pair ratios\n")
    print(f"| {'loop':<40} | {'tokens/s':>10} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 8}|")
    print(f"| {'ours (FSDP2 world 1, gloo, Trainer.step)':<40} | {ours_med:>10,.0f} | {statistics.median(ratios):>5.2f}× |")
    print(f"| {'baseline (plain nanoGPT-style loop)':<40} | {base_med:>10,.0f} | {1.0:>5.2f}× |")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
