"""evaluate stage: export the trained model to Hugging Face format, score it, sample from it.

`python -m tasks evaluate --in model=data/model --in eval=data/raw/eval --in shards=data/shards --out data/eval`

1. export.py      data/model → data/eval/hf (LlamaForCausalLM + tokenizer; logits match ours in fp32)
2. benchmarks.py  lm-eval `hf` model on the export, zero-shot, offline, tasks from params (local files)
3. intrinsic.py   validation loss and bits per byte per source on shards/val_docs; greedy generations
4. registry.py    (run by the CLI afterwards) metrics as tags on the model version, `champion` alias

Outputs: hf/, results.json (everything below plus per-task details), generations.jsonl.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from tasks.hashing import file_sha256
from tasks.atomic import atomic_dir
from tasks.config.evaluate import EvaluateConfig
from tasks.tracking import log_artifact

log = logging.getLogger("tinyfoundry.evaluate")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluate.device is cuda but no CUDA device is available (use auto or cpu)")
    return device


def metric_value(stats: dict, metric: str) -> float | None:
    """`piqa/acc_norm` → stats["piqa"]["acc_norm"]; None when absent or not a finite number."""
    head, _, name = metric.partition("/")
    value = stats.get(head, {}).get(name) if isinstance(stats.get(head), dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def run_evaluate(cfg: EvaluateConfig, inputs: dict[str, Path], output: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .benchmarks import TaskFailed, missing_local_files, run_benchmarks
    from .export import export_hf
    from .intrinsic import evaluate_bpb, generate

    if "model" not in inputs:
        raise SystemExit("evaluate needs --in model=<data/model folder>")
    model_dir = Path(inputs["model"])
    eval_dir = Path(inputs["eval"]) if inputs.get("eval") else None
    val_dir = Path(inputs["shards"]) / "val_docs" if inputs.get("shards") else None
    device = resolve_device(cfg.device)
    if (missing := missing_local_files(cfg.tasks, eval_dir)) and not cfg.allow_task_errors:
        raise TaskFailed(f"benchmark files not found: {'; '.join(missing)}. Fix evaluate.tasks or fetch.eval, or "
                         "set evaluate.allow_task_errors: true to record these tasks as skipped")
    torch.manual_seed(cfg.seed)
    sha = file_sha256(model_dir / "model.safetensors")

    timing, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timing[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    with atomic_dir(output, resume=False) as out:
        export = export_hf(model_dir, out / "hf")
        lap("export")
        scores, task_info = run_benchmarks(cfg.tasks, out / "hf", eval_dir, batch_size=cfg.batch_size, device=device,
                                           dtype=cfg.dtype, bootstrap_iters=cfg.bootstrap_iters, seed=cfg.seed,
                                           allow_task_errors=cfg.allow_task_errors)
        lap("benchmarks")

        model = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=DTYPES[cfg.dtype]).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(out / "hf")
        intrinsic, source_info = evaluate_bpb(model, tokenizer, val_dir, list(cfg.sources), cfg.bpb_tokens,
                                              model.config.max_position_embeddings, cfg.batch_size)
        lap("intrinsic")
        torch.manual_seed(cfg.seed)
        generations = generate(model, tokenizer, list(cfg.prompts), cfg.max_new_tokens)
        lap("generate")

        stats = {**scores, **intrinsic}
        champion = {"metric": cfg.champion_metric, "mode": cfg.champion_mode,
                    "value": metric_value(stats, cfg.champion_metric)}
        if champion["value"] is None:
            log.warning("champion metric %s was not measured: this version cannot become champion", cfg.champion_metric)
        meta_path = model_dir / "meta.json"
        results = {
            "checkpoint_sha256": sha, "model_meta": json.loads(meta_path.read_text()) if meta_path.exists() else {},
            "export": export, "device": device, "dtype": cfg.dtype, "scores": scores, **intrinsic,
            "tasks": task_info, "held_out": source_info, "champion": champion,
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
            for g in generations:
                f.write(json.dumps(g, ensure_ascii=False, sort_keys=True) + "\n")

    log_artifact(output / "generations.jsonl", "evaluate")
    log_artifact(output / "results.json", "evaluate")
    # champion/checkpoint_sha256 travel to registry.update_champion (run by the CLI with this stage's run active)
    return {**stats, "champion": champion, "checkpoint_sha256": sha, "timing": timing}
