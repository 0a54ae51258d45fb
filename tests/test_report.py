"""tasks/report.py on a realistic fake run folder: metrics/*.json as the CLI writes them + a training curve."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.metrics_schema import SCHEMA, conform, missing
from tasks.report import eval_scores, read_curve, run_summary, stage_result, write_report

STAGES = ["fetch@web", "fetch@books", "fetch@code", "fetch@eval", "ingest@web", "ingest@books", "ingest@code",
          "dedup", "filter", "tokenizer", "mix", "shard", "train", "evaluate"]


def fake_project(root: Path, steps: int = 120) -> dict:
    """metrics/*.json as the CLI writes them: each stage's own keys (as in its real output), passed through the
    schema's `conform`, so the report is tested on keys the stages write (the e2e test checks the real files)."""
    m = root / "metrics"
    m.mkdir(parents=True)

    def write(name, stage, obj):
        stats = conform(stage, obj)
        assert missing(stage, stats) == [], (stage, missing(stage, stats))
        (m / name).write_text(json.dumps(stats))

    write("fetch_books.json", "fetch", {"uris": 1, "files": 32, "bytes": 14_000_000, "downloaded": 0, "from_mirror": 0,
                                        "sources": [{"uri": "books/*.txt.gz", "paths": ["pg11.txt.gz"]}], "seconds": 0.2})
    write("ingest_web.json", "ingest", {"docs_in": 41234, "docs_out": 18311, "bytes_out": 73_000_000, "seconds": 212.4,
                                        "dropped": {"not_english": 15022, "too_short": 7012, "extract_failed": 889}})
    write("ingest_books.json", "ingest", {"docs_in": 100, "docs_out": 97, "dropped": {"too_short": 3}, "seconds": 8.1})
    write("ingest_code.json", "ingest", {"docs_in": 6012, "docs_out": 5120, "seconds": 15.0,
                                         "dropped": {"too_large": 12, "long_lines": 700, "low_alnum": 180}})
    write("dedup.json", "dedup", {"docs_in": 23528, "kept": 21002, "exact_dups": 1500, "near_dups": 1026, "skipped": 0,
                                  "skipped_by_reason": {}, "seconds": 95.0, "docs_per_s": 247.7})
    write("filter.json", "filter", {"docs_in": 21002, "docs_kept": 17000, "docs_rejected": 4002, "seconds": 60.0,
                                    "skipped_unreadable": 0,
                                    "rejected_by_reason": {"gopher_quality/gopher_below_alpha_threshold": 2000,
                                                           "gopher_repetition/dup_line_frac": 1000,
                                                           "c4/too_few_sentences": 700, "fineweb_quality/line_punct": 250,
                                                           "classifier/below_threshold": 52}})
    write("tokenizer.json", "tokenizer", {"vocab_size": 8192, "bytes_per_token": {"web": 4.4, "books": 4.1, "code": 3.0},
                                          "sample_bytes": {"web": 7_000_000, "books": 7_000_000, "code": 6_000_000},
                                          "skipped": {}, "seconds": 2.2})
    write("mix.json", "mix", {"tokens_per_source": {"web": 2_400_000, "books": 2_500_000, "code": 2_170_000},
                              "realised_shares": {"web": 0.339, "books": 0.354, "code": 0.307},
                              "repeats_per_source": {"books": 1.8}, "train_tokens": 7_070_000, "train_docs": 900,
                              "val_docs": 9, "skipped": {}, "within_tolerance": True, "seconds": 11.0})
    write("shard.json", "shard", {"train": {"docs": 900, "tokens": 7_070_000}, "val": {"docs": 9, "tokens": 70_000},
                                  "train_shards": 2, "mb_per_s": 2.4, "skipped": {}, "seconds": 9.5})
    write("train.json", "train", {"final_train_loss": 4.31, "final_val_loss": 4.52, "tokens_per_s": 5120.0,
                                  "mfu": 0.012, "step": steps, "tokens_seen": steps * 2048, "seconds": 410.0})
    candidates = {f"step_{s}": {"version": v, "step": s, "tokens_seen": s * 2048, "final": s == steps,
                                "best": v == 2, "champion": v == 2, "piqa": {"acc_norm": a}, "bpb": {"web": b}}
                  for v, s, a, b in ((1, steps // 2, 0.55, 1.6), (2, steps, 0.562, 1.42))}
    write("eval.json", "evaluate", {"piqa": {"acc": 0.571, "acc_norm": 0.562, "acc_norm_stderr": 0.0162},
                                    "openbookqa": {"acc": 0.14, "acc_norm": 0.262}, "bpb": {"web": 1.42},
                                    "val_loss": {"web": 3.9}, "candidates": candidates,
                                    "champion": {"metric": "piqa/acc_norm", "mode": "max", "value": 0.562},
                                    "champion_version": 2, "champion_moved": True, "best_version": 2,
                                    "model_version": 2, "seconds": 88.0})
    (m / "fetch_web.json").write_text("{not json")  # a corrupt file must not break the report
    model = root / "data" / "model"
    model.mkdir(parents=True)
    lines = ["step,train_loss,val_loss,lr"]
    for s in range(0, steps + 1, 10):
        val = f"{9.0 - 4 * math.log1p(s) / math.log1p(steps) + 0.2:.4f}" if s % 50 == 0 else ""
        lines.append(f"{s},{9.0 - 4 * math.log1p(s) / math.log1p(steps):.4f},{val},{0.003 * min(1, (s + 1) / 30):.6f}")
    lines.append("oops,not,a,row")
    (model / "train_curve.csv").write_text("\n".join(lines) + "\n")
    return {"name": "run-20261122-0300", "mlflow_run_id": None, "prefect_flow_run_id": "8f1c2a3e-0000-4000-8000-1",
            "wall_seconds": 950.2, "overhead_fraction": 0.031, "model_name": "tinyfoundry-llama",
            "stages": [{"stage": s, "status": "skipped" if s.startswith("fetch") else "ran", "seconds": 1.0}
                       for s in STAGES]}


def test_report_tables_and_files(tmp_path):
    run = fake_project(tmp_path)
    out = write_report(tmp_path, run)
    md = Path(out["markdown"]).read_text()
    assert Path(out["markdown"]) == tmp_path / "reports" / "run-20261122-0300.md"
    # stage table: one row per stage, in/out counts, top drop reasons, throughput
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    for stage in STAGES:
        assert stage in rows, stage
    assert "41,234 docs" in rows["ingest@web"] and "18,311 docs" in rows["ingest@web"]
    assert "7,140,000 tokens" in rows["shard"] and "909 docs" in rows["shard"]
    assert "exact_duplicate 1,500" in rows["dedup"] and "21,002 docs" in rows["dedup"]
    assert "not_english 15,022" in rows["ingest@web"] and "32 files" in rows["fetch@books"]
    assert "+1 more" in rows["filter"] and "17,000 docs" in rows["filter"]  # 5 reasons, 4 shown
    assert "194.1 docs/s" in rows["ingest@web"]  # 41234 docs in / 212.4 s
    assert "247.7 docs/s" in rows["dedup"]  # the stage's own figure wins
    assert "5,120.0 tokens/s" in rows["train"] and "245,760 tokens" in rows["train"]
    assert "20,000,000 bytes" in rows["tokenizer"] and "7,070,000 tokens" in rows["mix"]
    assert rows["fetch@web"].split("|")[2].strip() == "skipped"
    assert "ran (no metrics)" not in md  # every ran stage has its metrics file
    # realised mix by source
    assert "| tokens_per_source | 2,400,000 | 2,500,000 | 2,170,000 |" in md
    assert "outside its tolerance" not in md
    # eval beside references: ours (acc_norm preferred), Pythia-70M and TinyLlama numbers; held-out bpb
    assert "| piqa | 0.562 ± 0.016 (acc_norm) | 0.595 | 0.733 |" in md
    assert "| openbookqa | 0.262 (acc_norm) | – | 0.360 |" in md
    assert "| hellaswag | not run | – | 0.592 |" in md
    assert "| bits per byte | 1.42 |" in md
    assert "8f1c2a3e-0000-4000-8000-1" in md and "| champion | models:/tinyfoundry-llama/2 |" in md
    # candidates: one row per version in step order, the champion marked, metric against step plotted
    assert "| 1 | 60 | 122,880 | 0.55 | 1.6 |  |" in md
    assert "| 2 | 120 | 245,760 | 0.562 | 1.42 | **champion**, best of this run, data/model |" in md
    assert "Champion: version 2 (moved in this run)" in md
    cand = Path(out["candidates_png"])
    assert cand.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({cand.name})" in md
    # loss curve drawn and embedded in the self-contained HTML
    png = Path(out["loss_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = Path(out["html"]).read_text()
    assert "<table>" in page and page.count("data:image/png;base64,") == 2 and "<th>task</th>" in page
    assert out["logged_to_mlflow"] is False  # no run id given


def test_report_with_nothing_written_yet(tmp_path):
    out = write_report(tmp_path, {"name": "empty", "stages": [{"stage": "dedup", "status": "ran"}]})
    md = Path(out["markdown"]).read_text()
    assert "ran (no metrics)" in md
    assert "_No metrics/mix.json in this run._" in md and "No data/model/train_curve.csv" in md
    assert out["loss_png"] is None and Path(out["html"]).exists()


def test_report_logged_to_mlflow_run(tmp_path, mlflow_uri):
    import mlflow

    run = fake_project(tmp_path)
    mlflow.set_tracking_uri(mlflow_uri)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as r:
        pass
    out = write_report(tmp_path, {**run, "mlflow_run_id": r.info.run_id})
    assert out["logged_to_mlflow"] is True
    names = {Path(a.path).name for a in mlflow.MlflowClient(mlflow_uri).list_artifacts(r.info.run_id, "report")}
    assert names == {"run-20261122-0300.md", "run-20261122-0300.html", "run-20261122-0300-loss.png",
                     "run-20261122-0300-candidates.png"}


def test_report_survives_unreachable_tracking(tmp_path, monkeypatch):
    run = fake_project(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    out = write_report(tmp_path, {**run, "mlflow_run_id": "0" * 32})
    assert out["logged_to_mlflow"] is False and Path(out["markdown"]).exists()


def test_mix_off_target_is_flagged(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "mix.json").write_text(json.dumps(
        {"realised_shares": {"web": 0.58, "books": 0.0, "code": 0.42}, "within_tolerance": False,
         "realised_deviation": 0.3628}))
    md = Path(write_report(tmp_path, {"name": "r", "stages": []})["markdown"]).read_text()
    assert "outside its tolerance of the target** (deviation 0.3628)" in md
    assert "| realised_shares | 0.58 | 0 | 0.42 |" in md


def test_eval_scores_read_evaluates_schema():
    stats = {"piqa": {"acc": 0.6, "acc_norm": 0.61}, "bpb": {"web": 2.0}, "val_loss": {"web": 5.0},
             "champion": {"metric": "piqa/acc_norm", "value": 0.61}, "candidates": {"step_1": {}}, "seconds": 3.0}
    assert eval_scores(stats) == {"piqa": {"acc": 0.6, "acc_norm": 0.61}}


def test_every_stage_has_a_schema_and_a_result_line():
    from tasks.stages import STAGES

    assert set(SCHEMA) == set(STAGES)
    stats = conform("dedup", {"docs_in": 54, "kept": 50, "exact_dups": 3, "near_dups": 1, "skipped_by_reason": {},
                              "seconds": 5.6})
    assert stats["docs_out"] == 50 and stats["dropped"] == {"exact_duplicate": 3, "near_duplicate": 1}
    assert stage_result("dedup", stats) == "54 docs in → 50 docs out; dropped exact_duplicate 3, near_duplicate 1; in 5.6 s"
    assert conform("dedup", {"docs_out": 7, "kept": 50})["docs_out"] == 7  # a stage's own key wins
    assert missing("filter", {"docs_in": 1, "seconds": 1}) == ["docs_out", "dropped"]
    assert stage_result("evaluate", {"champion_version": 3, "champion_moved": False, "seconds": 2.0,
                                     "champion": {"metric": "bpb/web"}}) == \
        "champion: version 3 by bpb/web (unchanged); in 2 s"


def test_curve_skips_bad_cells(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("step,train_loss,val_loss,lr\n0,9.1,,0.1\n10,nan,8.5,0.2\nx,1,1,1\n20,7.0,7.2,\n")
    s = read_curve(p)
    assert s["train_loss"] == [(0, 9.1), (20, 7.0)] and s["val_loss"] == [(10, 8.5), (20, 7.2)]
    assert s["lr"] == [(0, 0.1), (10, 0.2)]


def test_run_summary_points_at_everything(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text = run_summary(tmp_path, {"html": str(tmp_path / "reports/r.html")}, "tinyfoundry-llama")
    assert str(tmp_path / "reports/r.html") in text and "models:/tinyfoundry-llama@champion" in text
    assert "make ui" in text and "dvc plots show" in text
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    text = run_summary(tmp_path, {"markdown": "r.md"})
    assert "Prefect UI: http://127.0.0.1:4200\n" in text and "MLflow UI:  http://127.0.0.1:5000" in text


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git for a DVC repo")
def test_dvc_plots_show_renders_loss_curve(tmp_path):
    """The project's own dvc.yaml `plots` section renders our train_curve.csv (columns as train writes them)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    plots = yaml.safe_load((root / "dvc.yaml").read_text()).get("plots")
    assert plots, "dvc.yaml declares no plots"
    fake_project(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    dvc = str(Path(__import__("sys").executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    res = subprocess.run([dvc, "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    blob = json.dumps(data)
    assert "train_loss" in blob and "val_loss" in blob and "errors" not in data, blob[:2000]
