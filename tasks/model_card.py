"""The model card of a registered version (its MLflow description, markdown): what it is, what it was trained
on, how it scores beside the reference models of the run report, and how to load it.

Written when the train stage registers the version and rewritten by evaluate once the version is scored.
"""
from __future__ import annotations

import math
from typing import Any

# Zero-shot reference numbers (fractions). Pythia-70M: EleutherAI's Pythia paper, acc;
# TinyLlama-1.1B: its model card (PIQA/HellaSwag/OBQA, acc_norm).
REFERENCES: dict[str, dict[str, float]] = {
    "Pythia-70M": {"piqa": 0.595, "lambada_openai": 0.185, "winogrande": 0.528, "arc_easy": 0.374},
    "TinyLlama-1.1B": {"piqa": 0.7329, "hellaswag": 0.5920, "openbookqa": 0.360},
}
# which of our metrics sits beside the reference numbers, best first
EVAL_METRIC_ORDER = ("acc_norm", "acc")


def fmt(v: Any) -> str:
    """A table cell: thousands separators, 4 significant digits, `–` for nothing."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (the run report and the model cards)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def nest_metrics(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """`{"piqa/acc_norm": .5, "bpb/web": 2.1}` → `{"piqa": {"acc_norm": .5}, "bpb": {"web": 2.1}}`."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        head, sep, name = key.partition("/")
        if sep and name:
            out.setdefault(head, {})[name] = value
    return out


def _eval_tables(scores: dict[str, dict[str, float]]) -> list[str]:
    tasks = [t for t in scores if t not in ("bpb", "val_loss", "val", "train")
             and any(m in scores[t] for m in EVAL_METRIC_ORDER)]
    if not tasks:
        return ["_Not evaluated yet: the evaluate stage (or `python -m tasks evaluate --model ...`) scores it._"]
    rows = []
    for task in tasks:
        metric = next(m for m in EVAL_METRIC_ORDER if m in scores[task])
        err = scores[task].get(f"{metric}_stderr")
        rows.append([task, f"{scores[task][metric]:.3f}{f' ± {err:.3f}' if err is not None else ''} ({metric})",
                     *(f"{ref[task]:.3f}" if task in ref else "–" for ref in REFERENCES.values())])
    parts = [table(["task (zero-shot)", "this version", *REFERENCES], rows),
             "References: Pythia-70M acc (Pythia paper), TinyLlama-1.1B acc_norm (model card)."]
    if scores.get("bpb"):
        sources = sorted(scores["bpb"])
        parts.append(table(["held-out", *sources],
                            [["bits per byte", *(scores["bpb"][s] for s in sources)],
                             ["loss (nats/token)", *(scores.get("val_loss", {}).get(s) for s in sources)]]))
    return parts


def render_card(name: str, version: str | int, meta: dict, metrics: dict[str, float] | None = None,
                train_run_id: str | None = None) -> str:
    """Markdown for one version. `meta` is the checkpoint's meta (data/model/meta.json or step_*/meta.json)."""
    cfg = meta.get("model_config", {})
    params = meta.get("params", {})
    last_val = meta.get("last_val") or {}
    step = meta.get("step")
    val_at = f" at step {last_val['step']}" if "step" in last_val else ""
    max_steps = params.get("max_steps")
    shape = ", ".join(f"{k} {cfg[k]}" for k in ("d_model", "n_layer", "n_head", "n_kv_head", "vocab_size") if k in cfg)
    lines = [f"# {name}, version {version} (step {fmt(step)})", "",
             f"A Llama-style decoder pretrained by tinyfoundry: preset {meta.get('preset', '?')}, {shape}"
             f"{', tied embeddings' if cfg.get('tie_embeddings') else ''}.", "", "## Training", ""]
    rows: list[list[Any]] = [
        ["step", f"{fmt(step)}{f' of {fmt(max_steps)}' if max_steps else ''}"],
        ["tokens seen", meta.get("tokens_seen")],
        ["validation loss / bits per byte (during training)",
         f"{fmt(last_val.get('val_loss', meta.get('final_val_loss')))} / "
         f"{fmt(last_val.get('val_bpb', meta.get('val_bpb')))}{val_at}"],
        ["run fingerprint", meta.get("fingerprint")], ["git commit", meta.get("git_commit")],
        ["tokenizer sha256", meta.get("tokenizer_sha256")], ["shard manifest sha256", meta.get("shard_manifest_sha256")],
    ]
    if train_run_id:
        rows.append(["train run", train_run_id])
    lines += [table(["", "value"], rows), ""]
    mix = meta.get("train_tokens_per_source") or {}
    total = sum(v for v in mix.values() if isinstance(v, (int, float)))
    if total:
        lines += ["## Data mix (training tokens per source)", "",
                  table(["source", "tokens", "share"], [[s, n, f"{n / total:.1%}"] for s, n in sorted(mix.items())]),
                  ""]
    lines += ["## Evaluation", "", *"\n\n".join(_eval_tables(nest_metrics(metrics or {}))).split("\n"), ""]
    lines += ["## Use", "", "```python", "import mlflow",
              f'generate = mlflow.transformers.load_model("models:/{name}/{version}")  # a text-generation pipeline',
              'print(generate("The history of the city", max_new_tokens=32)[0]["generated_text"])', "```", "",
              f"Serve: `mlflow models serve -m models:/{name}/{version} --env-manager local`; lineage: "
              f"`python -m tasks lineage models:/{name}/{version}`.", ""]
    return "\n".join(lines)


def with_evaluation(card: str, metrics: dict[str, float]) -> str:
    """The card with its Evaluation section replaced by a table of `metrics` (flat `task/metric` names)."""
    head, sep, rest = card.partition("\n## Evaluation\n")
    if not sep:
        return card
    _, use, tail = rest.partition("\n## Use\n")
    section = "\n\n".join(_eval_tables(nest_metrics(metrics)))
    return f"{head}\n## Evaluation\n\n{section}\n{use}{tail}"
