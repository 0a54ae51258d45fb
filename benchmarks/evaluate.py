"""Evaluation time of the default CPU profile (10m preset, PIQA + OpenBookQA at 500 items each, per-source bits
per byte, 3 generations) against its budget (≤ 90 s), and lm-eval at our batch size vs the harness default
(batch_size=1) on the same PIQA items.

    python benchmarks/evaluate.py [--items 500] [--baseline-items 100] [--bpb-tokens N]

The model is the 10m preset with random weights (evaluation cost depends on the shape, not the weights) and the
tokenizer is trained on the spot with rustbpe (vocab 8192) on Gutenberg text from ../shared/data; held-out text
is real book text and Python stdlib source (no web file: the shard stage's web val_docs need the pipeline).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")

SHARED = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def build_inputs(root: Path, vocab: int) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file
    from test_evaluate_fixtures import book_text, train_tiktoken, write_tokenizer_json

    from models.llama import Llama
    from models.presets import build_config
    from tasks.docs import write_docs

    text = book_text(SHARED, max_chars=3_000_000)
    enc = train_tiktoken(text, vocab)
    cfg = build_config("10m", vocab_size=enc.n_vocab)
    torch.manual_seed(0)
    model_dir = root / "model"
    model_dir.mkdir()
    save_file({k: v.contiguous() for k, v in Llama(cfg).state_dict().items()}, model_dir / "model.safetensors")
    (model_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "preset": "10m"}))
    write_tokenizer_json(enc, model_dir)
    shards = root / "shards"
    write_docs(shards / "val_docs" / "books.jsonl.gz",
               [{"text": text[i:i + 20_000], "id": str(i), "metadata": {"source": "books"}} for i in range(0, len(text), 20_000)])
    stdlib = Path(json.__file__).parents[1]
    code = [{"text": p.read_text(errors="replace"), "id": p.name, "metadata": {"source": "code"}}
            for p in sorted(stdlib.glob("*.py"))[:200]]
    write_docs(shards / "val_docs" / "code.jsonl.gz", code)
    return model_dir, shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--baseline-items", type=int, default=100)
    parser.add_argument("--bpb-tokens", type=int, default=None, help="default: params.yaml's evaluate.bpb_tokens")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    import yaml

    from tasks.config.evaluate import BenchmarkTask, EvaluateConfig
    from tasks.evaluate import run_evaluate
    from tasks.evaluate.benchmarks import run_benchmarks

    section = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["evaluate"]
    section["tasks"] = [{**t, "limit": args.items} for t in section["tasks"]]
    section["device"] = "cpu"
    if args.bpb_tokens:
        section["bpb_tokens"] = args.bpb_tokens
    cfg = EvaluateConfig.model_validate(section)
    eval_dir = SHARED / "eval"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, shards = build_inputs(root, 8192)
        t0 = time.perf_counter()
        stats = run_evaluate(cfg, {"model": model_dir, "eval": eval_dir, "shards": shards}, root / "eval")
        total = time.perf_counter() - t0

        piqa = [BenchmarkTask(name="piqa", data="piqa_valid.jsonl", labels="piqa_valid-labels.lst", limit=args.baseline_items)]
        times = {}
        for bs in (1, cfg.batch_size):
            t0 = time.perf_counter()
            run_benchmarks(piqa, root / "eval" / "hf", eval_dir, batch_size=bs, device="cpu", dtype="float32",
                           bootstrap_iters=0, seed=0)
            times[bs] = time.perf_counter() - t0

    rows = [("phase", "seconds", "")]
    rows += [(f"  {k}", f"{v:.1f}", "") for k, v in stats["timing"].items()]
    rows += [("evaluate stage total (10m, CPU)", f"{total:.1f}", f"{total / 90:.2f}x of the 90 s budget")]
    rows += [(f"lm-eval piqa x{args.baseline_items}, batch_size=1 (harness default)", f"{times[1]:.1f}", "1.00x"),
             (f"lm-eval piqa x{args.baseline_items}, batch_size={cfg.batch_size} (ours)", f"{times[cfg.batch_size]:.1f}",
              f"{times[cfg.batch_size] / times[1]:.2f}x time ({times[1] / times[cfg.batch_size]:.1f}x faster)")]
    width = max(len(r[0]) for r in rows)
    for name, secs, note in rows:
        print(f"{name:<{width}}  {secs:>8}  {note}")
    print("scores:", json.dumps({k: stats[k] for k in ("piqa", "openbookqa", "bpb", "val_loss") if k in stats}))


if __name__ == "__main__":
    main()
