"""CPU training throughput at the default shape: our training step against a minimal plain PyTorch loop in
nanoGPT style (same model class, same batch, AdamW + clipping), side by side in one process.

    .venv/bin/python benchmarks/train_cpu.py [--params params.yaml] [--steps 10] [--rounds 3]
        [--preset 10m --override n_layer=4 ... --seq-len 128 --batch 16 --accum 1 --threads 2]

The shape, batch, accumulation and threads default to params.yaml's `train` section (the vocabulary to
`tokenizer.vocab_size`); flags override them. Rows:
  ours           `Trainer.step` as `python -m tasks train` runs it at world size 1: a plain module (no FSDP2),
                 fused AdamW, global-norm clipping, the non-finite check
  ours, FSDP2    the same step on an FSDP2-wrapped model at world size 1 (`train.fsdp: always`; the path
                 before issue 19)
  baseline       nanoGPT's train.py inner loop without DDP/AMP: for-loop AdamW (fused only on CUDA there)
Single steps alternate in rotating order so machine load hits all alike; the table shows the median
tokens/s, the median CPU seconds per step (process CPU time, all threads) and the median of the per-round
ratios against the baseline (target ≥ 1.0×).
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
from tasks.config import load_config  # noqa: E402
from tasks.train import ctx_mesh  # noqa: E402
from tasks.train.trainer import Trainer, build_optimizer, setup_distributed  # noqa: E402


def baseline_step(model, opt, batches):
    """nanoGPT's train.py inner loop, without DDP/AMP (CPU fp32)."""
    for x, y in batches:
        _, loss = model(x, y)
        (loss / len(batches)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset")
    ap.add_argument("--override", action="append", default=[], metavar="FIELD=INT",
                    help="replaces params.yaml's model.overrides when given")
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--accum", type=int)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: train.cpu_threads)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    params = load_config(args.params)
    tc = params.train
    preset = args.preset or tc.model.preset
    overrides = ({k: int(v) for k, v in (o.split("=") for o in args.override)} if args.override or args.preset
                 else dict(tc.model.overrides))
    vocab = args.vocab or params.tokenizer.vocab_size
    seq, batch = args.seq_len or tc.seq_len, args.batch or tc.micro_batch_size
    accum = args.accum or tc.global_batch_tokens // (tc.seq_len * tc.micro_batch_size)
    threads = args.threads or tc.cpu_threads
    if threads:
        torch.set_num_threads(threads)
    cfg = build_config(preset, vocab, **overrides)
    ctx = setup_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, vocab, (batch, seq), generator=g), torch.randint(0, vocab, (batch, seq), generator=g))
               for _ in range(accum)]

    def trainer(shard: bool) -> Trainer:
        torch.manual_seed(0)
        model = Llama(cfg)
        parallelize(model, ctx_mesh(ctx.device, 1) if shard else None, shard=shard)
        return Trainer(model, build_optimizer(model, 1e-3, 0.1, (0.9, 0.95)), grad_clip=1.0, nonfinite="skip",
                       amp_dtype=None, device=ctx.device)

    ours, fsdp = trainer(False), trainer(True)
    torch.manual_seed(0)
    plain = Llama(cfg)
    plain_opt = build_optimizer(plain, 1e-3, 0.1, (0.9, 0.95), fused=False)  # nanoGPT: fused only on CUDA
    loops = {"ours (plain module, Trainer.step)": lambda: ours.step(batches, 1e-3, 0),
             "ours, FSDP2 at world size 1 (before)": lambda: fsdp.step(batches, 1e-3, 0),
             "baseline (plain nanoGPT-style loop)": lambda: baseline_step(plain, plain_opt, batches)}
    names = list(loops)
    for fn in loops.values():
        fn()  # warm-up: allocations, optimizer state
    tok_s = {n: [] for n in names}
    cpu_s = {n: [] for n in names}
    tokens = batch * seq * accum
    for r in range(args.rounds * args.steps):
        order = names[r % 3:] + names[:r % 3]  # rotate who goes first
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            loops[name]()
            cpu_s[name].append(time.process_time() - c)
            tok_s[name].append(tokens / (time.perf_counter() - t))
    base = names[-1]
    print(f"\nCPU training step, preset {preset} {overrides or ''} ({cfg.num_params() / 1e6:.2f}M params, vocab "
          f"{vocab}), batch {batch}×{seq}, accum {accum}, {torch.get_num_threads()} threads, "
          f"{args.rounds * args.steps} rounds of alternating single steps\n")
    print(f"| {'loop':<38} | {'tokens/s':>9} | {'CPU s/step':>10} | {'ratio (wall)':>12} | {'ratio (CPU)':>11} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 12}|{'-' * 14}|{'-' * 13}|")
    for name in names:
        wall = statistics.median(a / b for a, b in zip(tok_s[name], tok_s[base]))
        cpu = statistics.median(b / a for a, b in zip(cpu_s[name], cpu_s[base]))
        print(f"| {name:<38} | {statistics.median(tok_s[name]):>9,.0f} | {statistics.median(cpu_s[name]):>10.3f} | "
              f"{wall:>11.2f}× | {cpu:>10.2f}× |")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
