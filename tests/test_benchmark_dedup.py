"""benchmarks/dedup.py runs end to end on a small corpus: every method, two seeds pooled, index memory."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.extended
def test_dedup_benchmark_prints_every_method_pooled_over_seeds(shared_data):
    env = {**os.environ, "TINYFOUNDRY_SHARED_DATA": str(shared_data)}
    proc = subprocess.run([sys.executable, "benchmarks/dedup.py", "--docs", "240", "--seeds", "1", "2",
                           "--index-docs", "3000"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    positives = int(re.search(r"planted pairs per seed: (\d+) with J >= 0.85", out).group(1))
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(ours|ours-1-layout|datatrove|naive)\s+(\d+)\s+([\d.]+)x\s+([\d.]+)\s+(\d+)/(\d+)\s+([\d.]+)", out, re.M)}
    assert set(rows) == {"ours", "ours-1-layout", "datatrove", "naive"}, out
    assert rows["datatrove"][1] == "1.00"  # the baseline of the ratio column
    for method, (_, _, recall, missed, pairs, precision) in rows.items():
        assert int(pairs) == 2 * positives > 0, (method, out)  # two seeds pooled
        assert abs(float(recall) - (1 - int(missed) / int(pairs))) < 1e-3, (method, out)
    assert float(rows["ours"][2]) >= 0.95 and float(rows["ours"][5]) >= 0.99, out
    assert "recall per seed: ours " in out

    # 16 bytes (band hash + key) per band per document: 14 bands per layout
    index = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(ours, \d layouts?)[^\d]*\s+\d+\s+(\d+)", out, re.M)}
    assert index == {"ours, 2 layouts": 448.0, "ours, 1 layout": 224.0}, out
