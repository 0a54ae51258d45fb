"""benchmarks/gpu_train.py stays runnable without a GPU: its --tiny CPU smoke test prints a row per preset and
compile setting through the same code path as the train stage (FSDP2 on 2 ranks, AC, doc mask, compile)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from train_helpers import ROOT, free_port

SCRIPT = ROOT / "benchmarks" / "gpu_train.py"


def rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if re.match(r"\| (125m|tinyllama-1\.1b) ", line)]


def test_tiny_smoke_run_one_process():
    out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--compile", "off", "--ac", "on", "--doc-mask", "on"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = rows(out.stdout)
    assert [(r[0], r[2], r[3]) for r in got] == [("125m", "off", "fp32"), ("tinyllama-1.1b", "off", "fp32")]
    assert all(float(r[5].replace(",", "")) > 0 for r in got)
    assert "activation checkpointing on, doc mask on" in out.stdout


@pytest.mark.slow
@pytest.mark.extended
def test_tiny_smoke_run_two_ranks_compile_on_and_off():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           "--master-addr=127.0.0.1", str(SCRIPT), "--tiny", "--presets", "125m", "--compile", "on,off"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert [(r[0], r[2]) for r in rows(out.stdout)] == [("125m", "on"), ("125m", "off")]
    assert out.stdout.count("\n2 × CPU") == 1
