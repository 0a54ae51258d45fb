"""evaluate stage: export the trained model to Hugging Face format, score it, sample from it.

`python -m tasks evaluate --in model=data/model --in eval=data/raw/eval --in shards=data/shards --out data/eval`

0. registry.py    (run by the CLI before) picks the training run's registered versions to score
                  (`evaluate.candidates`) and downloads them: `--in candidates=<folder>`
1. export.py      data/model → data/eval/hf (LlamaForCausalLM + tokenizer; logits match ours in fp32)
2. benchmarks.py  lm-eval `hf` model on data/model and on every candidate, zero-shot, offline, local files
3. intrinsic.py   validation loss and bits per byte per source on shards/val_docs; greedy generations
4. registry.py    (run by the CLI afterwards) each version's scores as its metrics, the `champion` alias

Outputs: hf/, results.json (everything below plus per-task details), generations.jsonl.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from tasks.hashing import file_sha256
from tasks.atomic import atomic_dir
from tasks.config.evaluate import EvaluateConfig
from tasks.tracking import log_artifact

log = logging.getLogger("tinyfoundry.evaluate")

# torch is imported where it is used: decontaminate imports .benchmarks (the benchmark file parser) without it
CANDIDATES_FILE = "candidates.json"


def resolve_device(device: str) -> str:
    import torch

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


def load_candidates(folder: Path | None) -> list[dict]:
    """Registered versions to score besides data/model (`--in candidates=`, written by registry.fetch_candidates):
    candidates.json lists {version, step, tokens_seen, sha256, path (a Hugging Face folder; null: data/model)}."""
    if folder is None:
        return []
    listing = Path(folder) / CANDIDATES_FILE
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found: --in candidates must be a folder with {CANDIDATES_FILE}")
    entries = json.loads(listing.read_text())
    return [{**e, "path": str(Path(folder) / e["path"]) if e.get("path") else None} for e in entries]


def score_model(cfg: EvaluateConfig, hf_dir: Path, eval_dir: Path | None, val_dir: Path | None, device: str,
                timing: dict, prompts: bool) -> tuple[dict, dict]:
    """Benchmarks + held-out loss/bpb (+ generations) of one Hugging Face folder: (stats, details)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .benchmarks import run_benchmarks
    from .intrinsic import evaluate_bpb, generate

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timing[name] = round(timing.get(name, 0.0) + time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    scores, task_info = run_benchmarks(cfg.tasks, hf_dir, eval_dir, batch_size=cfg.batch_size, device=device,
                                       dtype=cfg.dtype, bootstrap_iters=cfg.bootstrap_iters, seed=cfg.seed,
                                       allow_task_errors=cfg.allow_task_errors)
    lap("benchmarks")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, cfg.dtype)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    intrinsic, source_info = evaluate_bpb(model, tokenizer, val_dir, list(cfg.sources), cfg.bpb_tokens,
                                          model.config.max_position_embeddings, cfg.batch_size)
    lap("intrinsic")
    generations = []
    if prompts:
        torch.manual_seed(cfg.seed)
        generations = generate(model, tokenizer, list(cfg.prompts), cfg.max_new_tokens)
        lap("generate")
    return {**scores, **intrinsic}, {"tasks": task_info, "held_out": source_info, "generations": generations}


def run_evaluate(cfg: EvaluateConfig, inputs: dict[str, Path], output: Path) -> dict:
    """Score data/model (`--in model=`) and the registered candidate versions (`--in candidates=`, optional).

    Stats: the scores of data/model at the top level (`piqa: {acc, acc_norm, ...}`, `bpb: {source: ...}`,
    `val_loss: {source: ...}`), the same per candidate under `candidates.step_<N>`, and what champion
    selection needs (`champion`: metric, mode, value of data/model; `checkpoint_sha256`).
    """
    import torch

    from .benchmarks import TaskFailed, missing_local_files
    from .export import export_hf

    if "model" not in inputs and "candidates" not in inputs:
        raise SystemExit("evaluate needs --in model=<data/model folder> (or --in candidates=<folder>)")
    model_dir = Path(inputs["model"]) if inputs.get("model") else None
    eval_dir = Path(inputs["eval"]) if inputs.get("eval") else None
    val_dir = Path(inputs["shards"]) / "val_docs" if inputs.get("shards") else None
    candidates = load_candidates(inputs.get("candidates"))
    device = resolve_device(cfg.device)
    if (missing := missing_local_files(cfg.tasks, eval_dir)) and not cfg.allow_task_errors:
        raise TaskFailed(f"benchmark files not found: {'; '.join(missing)}. Fix evaluate.tasks or fetch.eval, or "
                         "set evaluate.allow_task_errors: true to record these tasks as skipped")
    torch.manual_seed(cfg.seed)
    sha = file_sha256(model_dir / "model.safetensors") if model_dir else None
    meta = json.loads((model_dir / "meta.json").read_text()) if model_dir and (model_dir / "meta.json").exists() else {}
    if model_dir is not None and not any(c.get("sha256") == sha for c in candidates):
        candidates.append({"version": None, "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
                           "sha256": sha, "path": None})
    candidates.sort(key=lambda c: (c.get("step") is None, c.get("step") or 0))
    timing: dict = {}

    with atomic_dir(output, resume=False) as out:
        export = None
        if model_dir is not None:
            clock = time.perf_counter()
            export = export_hf(model_dir, out / "hf")
            timing["export"] = round(time.perf_counter() - clock, 3)
        # the stage's own result: data/model, else (a registered version evaluated alone) the last candidate
        main = next((c for c in candidates if c.get("path") is None), candidates[-1])
        scored, details = {}, {}
        for i, c in enumerate(candidates, 1):
            is_final = c.get("path") is None
            hf_dir = out / "hf" if is_final else Path(c["path"])
            log.info("evaluating candidate %d/%d: %s, step %s", i, len(candidates),
                     "data/model" if is_final else f"version {c['version']}", c.get("step"))
            stats_c, details[_key(c)] = score_model(cfg, hf_dir, eval_dir, val_dir, device, timing, prompts=c is main)
            scored[_key(c)] = {**{k: c.get(k) for k in ("version", "step", "tokens_seen", "sha256")},
                               "final": is_final, **stats_c}
        final_key = _key(main)
        stats = {k: v for k, v in scored[final_key].items() if isinstance(v, dict)}
        champion = {"metric": cfg.champion_metric, "mode": cfg.champion_mode,
                    "value": metric_value(stats, cfg.champion_metric)}
        if champion["value"] is None:
            log.warning("champion metric %s was not measured: this version cannot become champion", cfg.champion_metric)
        results = {
            "checkpoint_sha256": sha, "model_meta": meta, "export": export, "device": device, "dtype": cfg.dtype,
            "scores": {k: v for k, v in stats.items() if k not in ("bpb", "val_loss")}, **stats,
            "tasks": details[final_key]["tasks"], "held_out": details[final_key]["held_out"], "champion": champion,
            "candidates": {k: {**v, "tasks": details[k]["tasks"], "held_out": details[k]["held_out"]}
                           for k, v in scored.items()},
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
            for g in details[final_key]["generations"]:
                f.write(json.dumps(g, ensure_ascii=False, sort_keys=True) + "\n")

    log_artifact(output / "generations.jsonl", "evaluate")
    log_artifact(output / "results.json", "evaluate")
    # champion/checkpoint_sha256/candidates travel to registry.update_champion (run by the CLI, stage run active)
    return {**stats, "candidates": scored, "champion": champion, "checkpoint_sha256": sha, "timing": timing}


def _key(candidate: dict) -> str:
    """Candidates are keyed by step, so `dvc metrics diff` compares like with like across runs."""
    return f"step_{candidate['step']}" if candidate.get("step") is not None else f"version_{candidate.get('version')}"
