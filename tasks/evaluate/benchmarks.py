"""Benchmarks through lm-eval, offline: local task configs that read benchmark files in their original formats.

Each local task is a small YAML rendered at run time that `include:`s the standard lm-eval task of the same
format (so prompts, choices and metrics are exactly the harness's, and numbers compare with published ones)
and replaces only where the data comes from: `custom_dataset` points at a loader below, which reads the file
from any fsspec URI and converts its rows into the schema of the Hub dataset the standard task expects.
Tasks without a data file run as the standard lm-eval task (its dataset must be reachable).

| format         | original file                                      | rows become (Hub schema)            |
|----------------|----------------------------------------------------|-------------------------------------|
| piqa           | `valid.jsonl` {goal, sol1, sol2} + `valid-labels.lst` | baber/piqa {goal, sol1, sol2, label} |
| openbookqa     | AI2 jsonl {question: {stem, choices}, answerKey} or the TSV-derived jsonl {"Question Stem", "Choices": "(A) .. (B) ..", "Answer Key"} | allenai/openbookqa |
| lambada_openai | OpenAI `lambada_test.jsonl` {text}                 | EleutherAI/lambada_openai {text}    |
| hellaswag      | rowanz `hellaswag_val.jsonl` {activity_label, ctx_a, ctx_b, endings, label} | Rowan/hellaswag |
| arc_easy/_challenge | AI2 ARC jsonl {id, question: {stem, choices}, answerKey} | allenai/ai2_arc             |
| winogrande     | `dev.jsonl` {sentence, option1, option2, answer}   | allenai/winogrande                  |
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

log = logging.getLogger("tinyfoundry.evaluate")

SPLIT = "test"  # the one split every local task exposes and evaluates

# format → standard lm-eval task YAML (relative to lm_eval/tasks) whose prompts and metrics are used
STANDARD_YAML = {
    "piqa": "piqa/piqa.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "winogrande": "winogrande/default.yaml",
}

# what the last load of each data URI read: {"items": n, "skipped": n, "reasons": {...}, "sha256": ...}
LOAD_STATS: dict[str, dict] = {}


class TaskFailed(RuntimeError):
    """A benchmark task could not run and `evaluate.allow_task_errors` is false: the stage fails."""


class BadRow(ValueError):
    """A benchmark row that cannot be converted; it is skipped and counted under its message."""


# ---------------------------------------------------------------------------------------------- readers


def _read_lines(uri: str) -> tuple[list[str], str]:
    import fsspec

    with fsspec.open(uri, "rb", compression="infer") as f:
        raw = f.read()
    return raw.decode("utf-8", errors="replace").splitlines(), hashlib.sha256(raw).hexdigest()


def _json_rows(lines: list[str]) -> Iterator[dict | BadRow]:
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRow(f"line {i}: invalid JSON ({e.msg})")
            continue
        yield row if isinstance(row, dict) else BadRow(f"line {i}: not a JSON object")


def _choices(row: dict) -> dict:
    """AI2 {"question": {"stem", "choices": [{"text", "label"}]}} → {"text": [...], "label": [...]}."""
    choices = row["question"]["choices"]
    return {"text": [str(c["text"]) for c in choices], "label": [str(c["label"]) for c in choices]}


_OBQA_CHOICE = re.compile(r"\(([A-Z])\)\s*")


def _split_choice_string(s: str) -> dict:
    """"(A) puppies learning new tricks (B) children growing up ..." → {"text": [...], "label": ["A", ...]}."""
    parts = _OBQA_CHOICE.split(s)  # ['', 'A', 'text ', 'B', 'text ', ...]
    labels, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    if len(labels) < 2 or any(not t for t in texts):
        raise BadRow(f"cannot parse choices {s[:80]!r}")
    return {"text": texts, "label": labels}


def _piqa(row: dict, label: str | None) -> dict:
    if label is None or label.strip() not in ("0", "1"):
        raise BadRow(f"label {label!r} is not 0 or 1")
    return {"goal": row["goal"], "sol1": row["sol1"], "sol2": row["sol2"], "label": int(label)}


def _openbookqa(row: dict, _=None) -> dict:
    if isinstance(row.get("question"), dict):  # AI2's original jsonl
        out = {"id": str(row.get("id", "")), "question_stem": row["question"]["stem"], "choices": _choices(row),
               "answerKey": str(row["answerKey"]).strip()}
    else:  # the TSV-derived jsonl (as in shared/data/eval)
        out = {"id": str(row.get("ID", "")), "question_stem": row["Question Stem"],
               "choices": _split_choice_string(row["Choices"]), "answerKey": str(row["Answer Key"]).strip()}
    if out["answerKey"] not in out["choices"]["label"]:
        raise BadRow(f"answer key {out['answerKey']!r} is not among the choices {out['choices']['label']}")
    return out


def _arc(row: dict, _=None) -> dict:
    out = {"id": str(row.get("id", "")), "question": row["question"]["stem"], "choices": _choices(row),
           "answerKey": str(row["answerKey"]).strip()}
    if out["answerKey"] not in out["choices"]["label"]:
        raise BadRow(f"answer key {out['answerKey']!r} is not among the choices {out['choices']['label']}")
    return out


def _lambada(row: dict, _=None) -> dict:
    text = row["text"].strip()
    if " " not in text:
        raise BadRow("text has no last word to predict")
    return {"text": text}


def _hellaswag(row: dict, _=None) -> dict:
    endings = [str(e) for e in row["endings"]]
    if not 0 <= int(row["label"]) < len(endings):
        raise BadRow(f"label {row['label']!r} out of range for {len(endings)} endings")
    return {"ind": int(row.get("ind", 0)), "activity_label": row["activity_label"], "ctx_a": row["ctx_a"],
            "ctx_b": row["ctx_b"], "ctx": row.get("ctx", ""), "endings": endings,
            "source_id": str(row.get("source_id", "")), "split": str(row.get("split", "")),
            "split_type": str(row.get("split_type", "")), "label": str(int(row["label"]))}


def _winogrande(row: dict, _=None) -> dict:
    answer = str(row["answer"]).strip()
    if answer not in ("1", "2") or "_" not in row["sentence"]:
        raise BadRow(f"answer {answer!r} is not 1/2 or the sentence has no blank")
    return {"sentence": row["sentence"], "option1": row["option1"], "option2": row["option2"], "answer": answer}


CONVERTERS: dict[str, Callable[[dict, str | None], dict]] = {
    "piqa": _piqa, "openbookqa": _openbookqa, "lambada_openai": _lambada, "hellaswag": _hellaswag,
    "arc_easy": _arc, "arc_challenge": _arc, "winogrande": _winogrande,
}


def read_benchmark(fmt: str, data: str, labels: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows of a benchmark file converted to the Hub schema; bad rows are skipped, counted and logged."""
    lines, sha = _read_lines(data)
    label_lines = None
    if fmt == "piqa":
        if labels is None:
            raise ValueError(f"piqa data {data} needs its labels file (labels: ...-labels.lst)")
        label_lines = [ln for ln in _read_lines(labels)[0] if ln.strip()]
        n_rows = sum(1 for ln in lines if ln.strip())
        if len(label_lines) != n_rows:  # misaligned labels would silently score garbage
            raise ValueError(f"{labels} has {len(label_lines)} labels but {data} has {n_rows} rows")
    rows, reasons = [], {}
    for i, row in enumerate(_json_rows(lines)):
        if limit is not None and len(rows) >= limit:
            break
        try:
            if isinstance(row, BadRow):
                raise row
            rows.append(CONVERTERS[fmt](row, label_lines[i] if label_lines else None))
        except (BadRow, KeyError, TypeError, ValueError, AttributeError) as e:
            reason = f"missing field {e}" if isinstance(e, KeyError) else str(e).split(": ", 1)[-1][:80]
            reasons[reason] = reasons.get(reason, 0) + 1
            log.warning("%s: skipping row %d (%s)", data, i + 1, e)
    skipped = sum(reasons.values())
    LOAD_STATS[data] = {"items": len(rows), "skipped": skipped, "skip_reasons": reasons, "sha256": sha}
    log.info("%s (%s): %d items read%s", data, fmt, len(rows), f", {skipped} bad rows skipped" if skipped else "")
    if not rows:
        raise ValueError(f"{data} holds no usable {fmt} rows (skipped {skipped}: {reasons})")
    return rows


def load_dataset(fmt: str, data: str, labels: str | None = None, limit: int | None = None, **_: Any):
    """lm-eval `custom_dataset` hook (called with the task's metadata and dataset_kwargs)."""
    import datasets

    return datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(read_benchmark(fmt, data, labels, limit))})


# ----------------------------------------------------------------------------------------- task configs


def resolve_uri(ref: str, eval_dir: Path | None) -> str:
    """A data reference from params: a URI as is, an absolute path, or a name inside the fetched eval folder."""
    if "://" in ref or Path(ref).is_absolute():
        return ref
    if eval_dir is None:
        raise ValueError(f"data file {ref!r} is relative but no eval folder was given (--in eval=...)")
    return str((eval_dir / ref).resolve())


def missing_local_files(tasks, eval_dir: Path | None) -> list[str]:
    """`<task>: <path>` for every local benchmark file (data or labels) that does not exist (checked before any
    scoring, so a typo fails the stage in seconds rather than after the export and the other tasks)."""
    missing = []
    for t in tasks:
        for ref in (t.data, t.labels):
            if ref is None or ("://" in ref and not ref.startswith("file://")):
                continue
            try:
                path = Path(resolve_uri(ref, eval_dir).removeprefix("file://"))
            except ValueError as e:
                missing.append(f"{t.name}: {e}")
                continue
            if not path.is_file():
                missing.append(f"{t.name}: {path}")
    return missing


def render_task_yaml(name: str, fmt: str, data: str, labels: str | None, limit: int | None) -> str:
    """A local task config: the standard task's YAML with the data source replaced."""
    import lm_eval.tasks

    standard = Path(lm_eval.tasks.__file__).parent / STANDARD_YAML[fmt]
    cfg = {
        "include": str(standard), "task": name, "tag": [], "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"fmt": fmt, "data": data, "labels": labels, "limit": limit},
        "training_split": None, "validation_split": None, "test_split": SPLIT, "fewshot_split": None,
    }
    return yaml.safe_dump(cfg, sort_keys=False) + "custom_dataset: !function tasks.evaluate.benchmarks.load_dataset\n"


def _metrics(result: dict) -> dict:
    """lm-eval's {"acc,none": .., "acc_stderr,none": ..} → {"acc": .., "acc_stderr": ..} (numbers only)."""
    out = {}
    for key, value in result.items():
        metric, _, filt = key.partition(",")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and filt in ("none", "") \
                and metric != "sample_len":  # an item count, reported as `items` in results.json
            out[metric] = float(value)
    return out


def run_benchmarks(tasks, hf_dir: Path, eval_dir: Path | None, *, batch_size: int, device: str, dtype: str,
                   bootstrap_iters: int, seed: int, allow_task_errors: bool = False) -> tuple[dict, dict]:
    """Zero-shot lm-eval over `tasks` (BenchmarkTask list) with the `hf` model on `hf_dir`.

    A task that cannot run raises, unless `allow_task_errors`: then it is logged and recorded as skipped.

    Returns ({task: {acc, acc_stderr, acc_norm, ...}}, {task: {format, data, items, skipped, ...}}).
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not tasks:
        return {}, {}
    lm = HFLM(pretrained=str(hf_dir), batch_size=batch_size, device=device, dtype=dtype)
    scores, info = {}, {}
    with tempfile.TemporaryDirectory(prefix="tinyfoundry-lm-eval-") as tmp:
        local = [t for t in tasks if t.data is not None]
        standard = [t for t in tasks if t.data is None]
        uris = {}
        for t in local:
            data = resolve_uri(t.data, eval_dir)
            labels = resolve_uri(t.labels, eval_dir) if t.labels else None
            uris[t.name] = (data, labels)
            (Path(tmp) / f"{t.name}.yaml").write_text(render_task_yaml(t.name, t.resolved_format, data, labels, t.limit))
        # the thousands of built-in task YAMLs are indexed only when a standard task is asked for
        manager = TaskManager(include_path=tmp, include_defaults=bool(standard))
        for t in tasks:  # one at a time, so an allowed failure costs only its own task
            limit = None if t.data is not None else t.limit  # local tasks cut their file in the loader
            log.info("lm-eval: %s zero-shot%s", t.name, f" (first {t.limit} items)" if t.limit else "")
            try:
                out = simple_evaluate(model=lm, tasks=[t.name], num_fewshot=0, limit=limit, task_manager=manager,
                                      bootstrap_iters=bootstrap_iters, log_samples=False, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
            except Exception as e:  # noqa: BLE001 - unreachable dataset, unreadable file, bad rows only, ...
                if not allow_task_errors:
                    raise TaskFailed(f"lm-eval task {t.name} failed: {type(e).__name__}: {e}. Fix it, or set "
                                     "evaluate.allow_task_errors: true to record it as skipped") from e
                info[t.name] = {"skipped": f"{type(e).__name__}: {e}"[:300]}
                log.error("lm-eval task %s skipped: %s: %s", t.name, type(e).__name__, e)
                continue
            scores[t.name] = _metrics(out["results"][t.name])
            n = out.get("n-samples", {}).get(t.name, {})
            info[t.name] = {"items": n.get("effective", n.get("original"))}
    for t in tasks:
        entry = {"format": t.resolved_format or t.name, "standard_task": t.data is None, **info.get(t.name, {})}
        if t.name in uris:
            entry.update({"data": t.data, "labels": t.labels})
            if "skipped" not in entry:
                entry.update(LOAD_STATS.get(uris[t.name][0], {}))
        info[t.name] = entry
        log.info("%s: %s", t.name, ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.get(t.name, {}).items())))
    return scores, info
