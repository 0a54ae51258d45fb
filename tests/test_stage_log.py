"""flows/stage_log.py: the Prefect log of a stage keeps our own lines, paced progress, the first library warnings and
tracebacks; everything, datatrove's per-file lines and tqdm redraws included, stays in the full log file."""
from __future__ import annotations

from flows.stage_log import StageLog, split_embedded

# real lines of an ingest@web stage process (tqdm redraws with \r and runs into the next log line)
INGEST = [
    "10:17:16 INFO tinyfoundry: stage ingest@web: starting (output data/ingest/web)\n",
    "2026-12-01 10:17:21.139 | INFO     | datatrove.utils.logging:add_task_logger:76 - Launching pipeline for rank=0\n",
    "2026-12-01 10:17:21.156 | INFO     | datatrove.utils.logging:log_pipeline:108 - \n",
    "--- 🛠️ PIPELINE 🛠\n",
    "📖 - READER: 🕷 WARC records\n",
    "File progress:   0%|          | 0/2 [00:00<?, ?file/s]2026-12-01 10:17:21.172 | INFO     | "
    "datatrove.pipeline.readers.base:read_files_shard:215 - Reading input file a.warc.gz, 1/2\n",
    *[f"10:17:21 ERROR trafilatura.utils: lxml parsing failed: Document is empty ({i})\n" for i in range(5)],
    "File progress:  50%|█████     | 1/2 [00:02<00:02,  2.91s/file]\r",
    "File progress: 100%|██████████| 2/2 [00:12<00:00,  6.69s/file]\n",
    "File progress: 100%|██████████| 2/2 [00:12<00:00,  6.12s/file]\n",
    "2026-12-01 10:17:33.473 | INFO     | datatrove.executor.base:_run_for_rank:147 - \n",
    "📉📉📉 Stats: Task 0 📉📉📉\n",
    "Total Runtime: 11.95 seconds\n",
    "Loading weights: 100%|██████████| 20/20 [00:00<00:00, 4346.65it/s]\n",
    "2026/12/01 10:17:33 INFO mlflow.store.db.utils: Creating initial MLflow database tables...\n",
    "10:17:33 INFO tinyfoundry.ingest: ingest web: 65 records in, 16 documents out, dropped {'language': 14}\n",
    "Traceback (most recent call last):\n",
    '  File "x.py", line 1, in <module>\n',
    "ValueError: boom\n",
]


def run(lines, tmp_path, clock=None):
    shown = []
    kwargs = {"clock": clock} if clock else {}
    log = StageLog(tmp_path / "logs" / "ingest@web.log", shown.append, **kwargs)
    for line in lines:
        log.feed(line)
    return shown, log.close(), (tmp_path / "logs" / "ingest@web.log").read_text()


def test_prefect_gets_the_readable_part_and_the_file_gets_everything(tmp_path):
    shown, closing, full = run(INGEST, tmp_path)
    assert shown == [
        "10:17:16 INFO tinyfoundry: stage ingest@web: starting (output data/ingest/web)",
        *[f"10:17:21 ERROR trafilatura.utils: lxml parsing failed: Document is empty ({i})" for i in range(3)],
        "File progress: 100%|██████████| 2/2 [00:12<00:00,  6.69s/file]",  # completion, once
        "10:17:33 INFO tinyfoundry.ingest: ingest web: 65 records in, 16 documents out, dropped {'language': 14}",
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "ValueError: boom",
    ]
    # the file holds every line, the bar split from the datatrove line it ran into
    assert "Reading input file a.warc.gz, 1/2" in full and "📉📉📉 Stats: Task 0 📉📉📉" in full
    assert "File progress:   0%|          | 0/2 [00:00<?, ?file/s]\n2026-12-01 10:17:21.172 | INFO" in full
    assert full.count("lxml parsing failed") == 5 and "Loading weights" in full
    assert str(tmp_path / "logs" / "ingest@web.log") in closing and f"{len(full.splitlines())} lines" in closing
    assert "datatrove.utils.logging INFO ×2" in closing and "trafilatura.utils ERROR ×2" in closing


def test_progress_is_paced(tmp_path):
    now = [0.0]
    bars = [f"train:  {p:>2}%|█         | {p}/100 [00:{p:02d}<00:40,  1.00step/s]\r" for p in range(1, 100)]
    bars.append("train: 100%|██████████| 100/100 [01:40<00:00,  1.00step/s]\n")

    def clock():
        now[0] += 1.0  # one second per redraw
        return now[0]
    shown, _, _ = run(bars, tmp_path, clock)
    # 100 redraws over 100 s: one line every 30 s, then the completion
    assert [s.split("|")[0] for s in shown] == ["train:  31%", "train:  61%", "train:  91%", "train: 100%"]


def test_split_embedded_keeps_whole_log_lines_whole():
    mlflow_line = "2026/12/01 10:16:58 INFO mlflow.store.db.utils: Creating initial MLflow database tables..."
    assert split_embedded(mlflow_line) == [mlflow_line]
    assert split_embedded("x: 100%|█| 2/2 [00:00<00:00]10:16:50 INFO tinyfoundry.fetch: copied") == \
        ["x: 100%|█| 2/2 [00:00<00:00]", "10:16:50 INFO tinyfoundry.fetch: copied"]
