"""Kill -9 a 2-process FSDP2 run (torchrun, gloo) mid-run, restart it, and compare every step's loss with an
uninterrupted run of the same seed: they must be equal, not merely close."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from train_helpers import byte_tokens, free_port, losses, torchrun, write_shards


def spec(tmp_path: Path, name: str, shards: Path, sleep_s: float = 0.0) -> Path:
    cfg = {"model": {"preset": "10m", "overrides": {"n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
                                                    "ffn_hidden": 64}},
           "seq_len": 32, "micro_batch_size": 2, "global_batch_tokens": 256, "max_steps": 10, "lr": 1e-2,
           "min_lr": 1e-3, "warmup_steps": 2, "eval_every": 6, "eval_batches": 2, "log_every": 1,
           "checkpoint_every": 3, "keep_checkpoints": 2, "checkpoint_dir": str(tmp_path / name / "ckpt"),
           "device": "cpu", "seed": 5}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"cfg": cfg, "shards": str(shards), "out": str(tmp_path / name / "model"),
                                "sleep_s": sleep_s}))
    return path


@pytest.mark.slow
@pytest.mark.extended  # the reliability suite also kills training mid-run and checks the resumed outputs
def test_kill9_resume_matches_uninterrupted_run(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n" for i in range(3000))
    tokens = byte_tokens([text[i:i + 5000] for i in range(0, len(text), 5000)])
    shards = write_shards(tmp_path / "shards", {"train": np.array_split(tokens, 2), "val": [tokens[:4000]]})

    ref = torchrun(spec(tmp_path, "ref", shards), free_port())
    out, _ = ref.communicate(timeout=120)
    assert ref.returncode == 0, out[-3000:]

    killed = torchrun(spec(tmp_path, "run", shards, sleep_s=0.3), free_port())
    ckpt_root = tmp_path / "run" / "ckpt"
    deadline = time.time() + 90
    while not list(ckpt_root.glob("*/step_000006")) and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    # torchrun and both workers at once, no chance to clean up (workers may sit in their own process group)
    procs = [psutil.Process(killed.pid), *psutil.Process(killed.pid).children(recursive=True)]
    assert len(procs) >= 3, "expected torchrun plus two workers"
    for p in procs:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    killed.wait()
    assert not (tmp_path / "run" / "model").exists()
    done = sorted(p.name for p in next(ckpt_root.iterdir()).iterdir() if p.name.startswith("step_"))
    assert done and done[-1] in ("step_000006", "step_000009")

    resumed = torchrun(spec(tmp_path, "run", shards), free_port())
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out[-3000:]
    stats = json.loads((tmp_path / "run" / "model.stats.json").read_text())
    assert stats["resumed_from_step"] in (6, 9)  # continued from the checkpoint, did not start over
    meta = json.loads((tmp_path / "run" / "model" / "meta.json").read_text())
    assert meta["step"] == 10 and meta["world_size"] == 2
    assert losses(tmp_path / "run" / "model") == losses(tmp_path / "ref" / "model")
    assert len(losses(tmp_path / "ref" / "model")) == 10
