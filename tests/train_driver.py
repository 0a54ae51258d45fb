"""Runs `run_train` under torchrun for the resume test: `torchrun ... tests/train_driver.py spec.json`.

Byte-level shards need no tokenizer package; `sleep_s` slows each step so the test can kill -9 mid-run."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import tasks.train as train  # noqa: E402
from tasks.config.train import TrainConfig  # noqa: E402
from tasks.train.trainer import Trainer  # noqa: E402
from train_helpers import byte_lengths  # noqa: E402


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    train.load_token_bytes = lambda _dir: byte_lengths()
    if spec.get("sleep_s"):
        step = Trainer.step

        def slow_step(self, *a, **k):
            time.sleep(spec["sleep_s"])
            return step(self, *a, **k)
        Trainer.step = slow_step
    stats = train.run_train(TrainConfig(**spec["cfg"]), {"shards": Path(spec["shards"])}, Path(spec["out"]))
    if int(os.environ.get("RANK", 0)) == 0:
        Path(spec["out"] + ".stats.json").write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
