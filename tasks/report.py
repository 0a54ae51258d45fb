"""Run report: `reports/<run>.md` + `.html` + a loss-curve PNG, logged to the run's MLflow parent run.

Built only from what the run left on disk -- `metrics/*.json` (the stats each stage returned, written by the
CLI) and `data/model/train_curve.csv` -- so it can be rebuilt for any finished run. Stage metrics are
written by several engineers' stages with their own keys: every section shows what exists and says what
is missing instead of failing.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text
from tasks.metrics_schema import summary
from tasks.model_card import EVAL_METRIC_ORDER, REFERENCES, fmt as _fmt, table as _table
from tasks.tracking import flatten, tracking_uri

log = logging.getLogger("tinyfoundry.report")

SOURCES = ("web", "books", "code")
# evaluate's stats that are not benchmark tasks (tasks/evaluate: `{task: {metric: value}}` beside these)
EVAL_NON_TASKS = ("bpb", "val_loss", "candidates", "champion", "timing")


def _load_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("report: cannot read %s (%s); its section is left out", path, e)
        return None
    return data if isinstance(data, dict) else None


METRICS_ALIASES = {"evaluate": "eval.json"}  # dvc.yaml passes `--metrics metrics/eval.json` to evaluate


def metrics_file(root: Path, stage: str) -> Path:
    """`ingest@web` -> metrics/ingest_web.json (the CLI's naming), or the name dvc.yaml gives the stage."""
    name, _, source = stage.partition("@")
    default = root / "metrics" / (f"{name}_{source}.json" if source else f"{name}.json")
    alias = root / "metrics" / METRICS_ALIASES.get(stage, default.name)
    return default if default.exists() or not alias.exists() else alias


def _amount(value_unit: tuple[float, str] | None) -> str | None:
    return f"{_fmt(value_unit[0])} {value_unit[1]}" if value_unit else None


def _throughput(stats: dict, stage: str, seconds: float | None) -> str | None:
    """The stage's own `<unit>_per_s` figure, else what it wrote (or read) per second."""
    for key, value in stats.items():
        if key.endswith("_per_s") and isinstance(value, (int, float)):
            unit = key.removesuffix("_per_s").replace("_", " ")
            return f"{_fmt(float(value))} {'MB' if unit == 'mb' else unit}/s"
    s = summary(stage, stats)
    amount = s["in"] or s["out"]
    if not seconds or not amount:
        return None
    value, unit = amount
    return f"{_fmt(value / 1e6 / seconds)} MB/s" if unit == "bytes" else f"{_fmt(value / seconds)} {unit}/s"


def _drops(dropped: dict[str, int]) -> str:
    top = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in top[:4])
    return shown + (f", +{len(top) - 4} more" if len(top) > 4 else "")


def stage_result(stage: str, stats: dict) -> str:
    """One line: `65 docs in → 16 docs out; dropped not_response 34, language 14; in 16.6 s` (the flow's log)."""
    s = summary(stage, stats)
    parts = [" → ".join(x for x in (f"{_amount(s['in'])} in" if s["in"] else None,
                                    f"{_amount(s['out'])} out" if s["out"] else None) if x)]
    if s["dropped"]:
        parts.append(f"dropped {_drops(s['dropped'])}")
    elif "dropped" in stats:
        parts.append("dropped nothing")
    if stats.get("champion_version") is not None:
        metric = (stats.get("champion") or {}).get("metric")
        parts.append(f"champion: version {stats['champion_version']} by {metric}"
                     f" ({'moved' if stats.get('champion_moved') else 'unchanged'})")
    if s["seconds"] is not None:
        parts.append(f"in {_fmt(float(s['seconds']))} s")
    return "; ".join(p for p in parts if p)


def stage_rows(root: Path, run: dict) -> list[list[Any]]:
    """One row per stage of the run, plus any metrics file of a stage the run did not list."""
    listed = [s for s in run.get("stages", []) if isinstance(s, dict) and s.get("stage")]
    seen = {metrics_file(root, s["stage"]).name for s in listed}
    extra = sorted(p for p in (root / "metrics").glob("*.json") if p.name not in seen)
    entries = [(s["stage"], s.get("status", "?"), s.get("seconds", s.get("task_seconds")), metrics_file(root, s["stage"]))
               for s in listed]
    entries += [(p.stem.replace("_", "@", 1) if p.stem.split("_")[-1] in SOURCES + ("eval",) else p.stem,
                 "not in run", None, p) for p in extra]
    rows = []
    for stage, status, run_seconds, path in entries:
        stats = (_load_json(path) or {}) if path.exists() else {}
        seconds = stats.get("seconds", run_seconds)
        s = summary(stage, stats)
        rows.append([stage, status if stats or status == "skipped" else f"{status} (no metrics)",
                     _amount(s["in"]), _amount(s["out"]), _drops(s["dropped"]), seconds,
                     _throughput(stats, stage, seconds)])
    return rows


def _scalars(stats: dict, skip: tuple[str, ...] = ()) -> list[list[Any]]:
    return [[k, v] for k, v in sorted(flatten(stats).items())
            if not isinstance(v, (list, dict)) and not k.startswith(skip)]


def mix_section(stats: dict) -> str:
    """Per-source dicts (`{"tokens": {"web": .., "code": ..}}`) as a table; other scalars below it."""
    per_source = {k: v for k, v in stats.items()
                  if isinstance(v, dict) and v and set(v) <= set(SOURCES) | {"text", "total"}}
    parts = []
    if stats.get("within_tolerance") is False:
        parts.append(f"**Warning: the realised mix is outside its tolerance of the target** "
                     f"(deviation {_fmt(stats.get('realised_deviation'))}).")
    if per_source:
        sources = [s for s in (*SOURCES, "text", "total") if any(s in v for v in per_source.values())]
        parts.append(_table(["", *sources], [[k, *(v.get(s) for s in sources)] for k, v in per_source.items()]))
    rest = _scalars({k: v for k, v in stats.items() if k not in per_source})
    if rest:
        parts.append(_table(["metric", "value"], rest))
    return "\n\n".join(parts)


def decontaminate_section(stats: dict) -> str:
    """Per benchmark: documents hit, n-grams matched, items found; then what was removed."""
    tasks = stats.get("tasks") if isinstance(stats.get("tasks"), dict) else {}
    cols = ["items", "min_words", "docs_hit", "ngrams_matched", "items_found", "docs_removed", "spans_cut"]
    parts = [_table(["task", *(c.replace("_", " ") for c in cols)],
                    [[name, *(t.get(c) for c in cols)] for name, t in tasks.items() if isinstance(t, dict)])
             if tasks else "_No benchmark was decontaminated against._"]
    chars_in = stats.get("chars_in") or 0
    share = f"{100 * (stats.get('chars_removed') or 0) / chars_in:.3f}%" if chars_in else None
    parts.append(_table(["", "value"], [["documents in", stats.get("docs_in")], ["documents out", stats.get("docs_out")],
                                        ["removed whole", stats.get("docs_removed")],
                                        ["cut (spans)", f"{_fmt(stats.get('docs_cut'))} ({_fmt(stats.get('spans_cut'))})"],
                                        ["characters removed", share]]))
    return "\n\n".join(parts)


def eval_scores(stats: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the benchmark tasks in evaluate's stats."""
    return {task: {m: float(v) for m, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in stats.items() if isinstance(metrics, dict) and task not in EVAL_NON_TASKS}


def eval_section(stats: dict) -> str:
    scores = eval_scores(stats)
    tasks = [t for t in scores if any(m in scores[t] for m in EVAL_METRIC_ORDER)]
    tasks += [t for ref in REFERENCES.values() for t in ref if t not in tasks]
    rows = []
    for task in tasks:
        ours = scores.get(task, {})
        metric = next((m for m in EVAL_METRIC_ORDER if m in ours), None)
        err = ours.get(f"{metric}_stderr")
        shown = f"{ours[metric]:.3f}{f' ± {err:.3f}' if err is not None else ''} ({metric})" if metric else "not run"
        rows.append([task, shown,
                     *(f"{ref[task]:.3f}" if task in ref else "–" for ref in REFERENCES.values())])
    text = _table(["task", "tinyfoundry", *REFERENCES], rows)
    text += ("\n\nReferences are zero-shot: Pythia-70M acc (Pythia paper), TinyLlama-1.1B acc_norm (model card).")
    other = [[f"{t}/{m}", v] for t, ms in sorted(scores.items()) for m, v in sorted(ms.items())
             if t not in tasks or m.removesuffix("_stderr") not in EVAL_METRIC_ORDER]
    if other:
        text += "\n\n" + _table(["other eval metric", "value"], other)
    held_out = sorted(set(stats.get("bpb") or {}) | set(stats.get("val_loss") or {}))
    if held_out:
        text += "\n\n" + _table(["held-out (data/model)", *held_out],
                                [["bits per byte", *((stats.get("bpb") or {}).get(s) for s in held_out)],
                                 ["loss (nats/token)", *((stats.get("val_loss") or {}).get(s) for s in held_out)]])
    return text


def candidate_rows(stats: dict) -> tuple[list[str], list[list[Any]]]:
    """The candidates table: one row per scored version, in step order; the champion and the best marked."""
    metric = (stats.get("champion") or {}).get("metric", "")
    cands = sorted((stats.get("candidates") or {}).values(), key=lambda c: (c.get("step") is None, c.get("step") or 0))
    sources = sorted({s for c in cands for s in (c.get("bpb") or {})})
    head, _, name = metric.partition("/")
    header = ["version", "step", "tokens seen", metric or "champion metric", *(f"bpb {s}" for s in sources), ""]
    rows = []
    for c in cands:
        marks = [m for m, on in (("**champion**", c.get("champion")), ("best of this run", c.get("best")),
                                 ("data/model", c.get("final"))) if on]
        rows.append([c.get("version") if c.get("version") is not None else "–", c.get("step"), c.get("tokens_seen"),
                     (c.get(head) or {}).get(name) if isinstance(c.get(head), dict) else None,
                     *((c.get("bpb") or {}).get(s) for s in sources), ", ".join(marks)])
    return header, rows


def candidates_section(stats: dict, png: Path | None) -> str:
    if not stats.get("candidates"):
        return "_No candidates in metrics/eval.json (evaluate scored no registered versions)._"
    header, rows = candidate_rows(stats)
    champ = stats.get("champion_version")
    text = [_table(header, rows), "",
            f"Champion: version {champ} ({'moved in this run' if stats.get('champion_moved') else 'unchanged'}); "
            f"chosen by `evaluate.champion_metric` = {stats['champion'].get('metric')} ({stats['champion'].get('mode')})."
            if champ is not None else "No champion: no candidate has a value for the champion metric."]
    if png:
        text += ["", f"![{stats['champion'].get('metric')} against step]({png.name})"]
    return "\n".join(text)


def plot_candidates(stats: dict, out: Path, title: str) -> Path | None:
    """The champion metric and held-out bits per byte of every candidate against its step."""
    cands = [c for c in (stats.get("candidates") or {}).values() if isinstance(c.get("step"), (int, float))]
    if not cands:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands.sort(key=lambda c: c["step"])
    metric = (stats.get("champion") or {}).get("metric", "")
    head, _, name = metric.partition("/")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    points = [(c["step"], c[head][name]) for c in cands if isinstance(c.get(head), dict) and name in c[head]]
    if points:
        top.plot(*zip(*points), marker="o", label=metric)
        for c in cands:
            if c.get("champion") and isinstance(c.get(head), dict) and name in c[head]:
                top.scatter([c["step"]], [c[head][name]], s=160, facecolors="none", edgecolors="C3", label="champion")
    top.set_ylabel(metric)
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend()
    for source in sorted({s for c in cands for s in (c.get("bpb") or {})}):
        pts = [(c["step"], c["bpb"][source]) for c in cands if source in (c.get("bpb") or {})]
        bottom.plot(*zip(*pts), marker="o", label=f"bpb {source}")
    bottom.set_ylabel("bits per byte")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    bottom.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return out


def read_curve(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Columns of train_curve.csv as (step, value) series, skipping empty or non-numeric cells."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for col, cell in row.items():
                if col == "step" or col is None or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(step) and math.isfinite(value):
                    series.setdefault(col, []).append((step, value))
    return series


def plot_curve(series: dict[str, list[tuple[float, float]]], out: Path, title: str) -> Path | None:
    losses = {k: v for k, v in series.items() if "loss" in k and v}
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_lr = bool(series.get("lr"))
    fig, axes = plt.subplots(2 if has_lr else 1, 1, figsize=(7, 5 if has_lr else 3.5), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [3, 1]} if has_lr else None)
    ax = axes[0][0]
    for name, points in sorted(losses.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if has_lr:
        xs, ys = zip(*series["lr"])
        axes[1][0].plot(xs, ys, color="gray")
        axes[1][0].set_ylabel("lr")
        axes[1][0].grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return out


def _links(run: dict, root: Path) -> list[list[str]]:
    rows = [["MLflow run id", run.get("mlflow_run_id") or "–"],
            ["Prefect flow-run id", run.get("prefect_flow_run_id") or "–"]]
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if run.get("mlflow_run_id") and mlflow_uri.startswith("http"):
        try:
            from mlflow.tracking import MlflowClient

            exp = MlflowClient(mlflow_uri).get_run(run["mlflow_run_id"]).info.experiment_id
            rows.append(["MLflow UI", f"{mlflow_uri.rstrip('/')}/#/experiments/{exp}/runs/{run['mlflow_run_id']}"])
        except Exception as e:  # the report must not fail because the server is gone
            log.warning("report: cannot look up MLflow run %s (%s)", run["mlflow_run_id"], e)
    prefect_api = os.environ.get("PREFECT_API_URL", "")
    if run.get("prefect_flow_run_id") and prefect_api.startswith("http"):
        ui = prefect_api.rstrip("/").removesuffix("/api")
        rows.append(["Prefect UI", f"{ui}/runs/flow-run/{run['prefect_flow_run_id']}"])
    evaluation = _load_json(metrics_file(root, "evaluate")) if metrics_file(root, "evaluate").exists() else None
    name = run.get("model_name", "tinyfoundry-llama")
    for label, key in (("model version (data/model)", "model_version"), ("champion", "champion_version")):
        version = (evaluation or {}).get(key)
        if version is not None:
            rows.append([label, f"models:/{name}/{version}"])
            if mlflow_uri.startswith("http"):
                rows.append([f"{label} in the MLflow UI", f"{mlflow_uri.rstrip('/')}/#/models/{name}/versions/{version}"])
    return rows


def render_markdown(root: Path, run: dict, png: Path | None, candidates_png: Path | None = None) -> str:
    name = run.get("name", "run")
    out = [f"# tinyfoundry run report: {name}", ""]
    summary = [["wall time (s)", run.get("wall_seconds")], ["orchestration overhead", run.get("overhead_fraction")],
               ["stages run", sum(1 for s in run.get("stages", []) if s.get("status") == "ran")],
               ["stages skipped (up to date)", sum(1 for s in run.get("stages", []) if s.get("status") == "skipped")]]
    out += [_table(["run", "value"], summary + _links(run, root)), ""]
    out += ["## Stages", "", _table(["stage", "status", "in", "out", "dropped (top reasons)", "seconds",
                                     "throughput"], stage_rows(root, run)), ""]
    sections = [("Decontamination", "decontaminate.json", decontaminate_section),
                ("Realised mix", "mix.json", mix_section),
                ("Tokenizer", "tokenizer.json", lambda s: _table(["metric", "value"], _scalars(s))),
                ("Training", "train.json", lambda s: _table(["metric", "value"], _scalars(s))),
                ("Evaluation", "eval.json", eval_section),
                ("Candidates", "eval.json", lambda st: candidates_section(st, candidates_png))]
    for title, fname, render in sections:
        out += [f"## {title}", ""]
        if fname == "eval.json" and not (root / "metrics" / fname).exists():
            fname = "evaluate.json"  # the CLI's default name when dvc.yaml passes no --metrics
        stats = _load_json(root / "metrics" / fname) if (root / "metrics" / fname).exists() else None
        body = render(stats) if stats else ""
        if title in ("Evaluation", "Candidates") and not stats:
            body = render({})
        out += [body or f"_No metrics/{fname} in this run._", ""]
        if title == "Training":
            out += [f"![loss curve]({png.name})" if png else "_No data/model/train_curve.csv with losses._", ""]
    return "\n".join(out)


CSS = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
       "th{background:#f3f3f3}td:nth-child(n+3){font-variant-numeric:tabular-nums}img{max-width:100%}")


def render_html(markdown: str, title: str, *pngs: Path | None) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    for png in filter(None, pngs):  # one self-contained file: the PNGs inline, so the HTML opens anywhere
        data = base64.b64encode(png.read_bytes()).decode()
        body = body.replace(f'src="{png.name}"', f'src="data:image/png;base64,{data}"')
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")


def log_to_mlflow(root: Path, run_id: str, paths: list[Path]) -> bool:
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri(None, root))
        for path in paths:
            client.log_artifact(run_id, str(path), "report")
    except Exception as e:  # a tracking outage must not lose the report on disk
        log.warning("report: could not log to MLflow run %s (%s); the files are still in %s", run_id, e,
                    paths[0].parent)
        return False
    return True


def write_report(root: str | Path, run: dict) -> dict:
    """Write reports/<run>.md, .html and -loss.png from metrics/ and the training curve; log them to MLflow."""
    root = Path(root).resolve()
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(run.get("name") or "run"))
    reports = root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    curve = root / "data" / "model" / "train_curve.csv"
    png = None
    if curve.exists():
        try:
            png = plot_curve(read_curve(curve), reports / f"{name}-loss.png", f"{name}: training loss")
        except (OSError, csv.Error) as e:
            log.warning("report: cannot read %s (%s); no loss curve", curve, e)
    evaluation = _load_json(metrics_file(root, "evaluate")) if metrics_file(root, "evaluate").exists() else None
    cand_png = plot_candidates(evaluation, reports / f"{name}-candidates.png", f"{name}: candidates") \
        if evaluation and evaluation.get("candidates") else None
    md = render_markdown(root, run, png, cand_png)
    md_path, html_path = reports / f"{name}.md", reports / f"{name}.html"
    atomic_write_text(md_path, md)
    atomic_write_text(html_path, render_html(md, f"tinyfoundry run {name}", png, cand_png))
    files = [md_path, html_path] + [p for p in (png, cand_png) if p]
    logged = bool(run.get("mlflow_run_id")) and log_to_mlflow(root, run["mlflow_run_id"], files)
    log.info("report: wrote %s (+ .html%s)%s", md_path, ", loss curve" if png else "",
             f", logged to MLflow run {run['mlflow_run_id']}" if logged else "")
    return {"markdown": str(md_path), "html": str(html_path), "loss_png": str(png) if png else None,
            "candidates_png": str(cand_png) if cand_png else None, "logged_to_mlflow": logged}


def run_summary(root: str | Path, report: dict, model_name: str = "tinyfoundry-llama",
                prefect_ui: str | None = None, mlflow_ui: str | None = None) -> str:
    """The few lines `make run` ends with: where artifacts, report and model are, and how to open the UIs."""
    root = Path(root).resolve()
    prefect_ui = prefect_ui or os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None
    mlflow_uri = mlflow_ui or os.environ.get("MLFLOW_TRACKING_URI", "")
    mlflow_ui = mlflow_uri if mlflow_uri.startswith("http") else None
    lines = ["", "Run finished.",
             f"  artifacts: {root / 'data'}  (DVC outputs; metrics in {root / 'metrics'})",
             f"  report:    {report.get('html') or report.get('markdown')}",
             f"  model:     {root / 'data' / 'model'}  (MLflow registry: models:/{model_name}@champion)"]
    if prefect_ui or mlflow_ui:
        lines += [f"  Prefect UI: {prefect_ui or '(not used)'}", f"  MLflow UI:  {mlflow_ui or '(not used)'}"]
    else:
        lines += ["  UIs:       `make ui` starts Prefect (http://127.0.0.1:4200) and MLflow (http://127.0.0.1:5000)",
                  "             on this project's stores; this run shows there."]
    lines.append("  loss plot: `dvc plots show` (writes dvc_plots/index.html)")
    return "\n".join(lines) + "\n"
