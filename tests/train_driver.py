"""Runs `run_train` under torchrun for the multi-process tests: `torchrun ... tests/train_driver.py spec.json`.

The spec is one run or a list of runs done one after the other in the same processes: {"cfg", "shards",
"out", "sleep_s"} or {"probe": "mixed_precision", "out"} (reports the dtypes FSDP2 computes and reduces in).
Byte-level shards need no tokenizer package; `sleep_s` slows each step so a test can kill -9 mid-run."""
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


def run(spec: dict) -> None:
    if spec.get("probe") == "mixed_precision":
        return probe_mixed_precision(Path(spec["out"]))
    step = Trainer.step
    if spec.get("sleep_s"):
        def slow_step(self, *a, **k):
            time.sleep(spec["sleep_s"])
            return step(self, *a, **k)
        Trainer.step = slow_step
    try:
        stats = train.run_train(TrainConfig(**spec["cfg"]), {"shards": Path(spec["shards"])}, Path(spec["out"]))
    finally:
        Trainer.step = step
    if int(os.environ.get("RANK", 0)) == 0:
        Path(spec["out"] + ".stats.json").write_text(json.dumps(stats))


def probe_mixed_precision(out: Path) -> None:
    """FSDP2 with bf16 MixedPrecisionPolicy on 2 ranks: the dtypes a block computes with, its gradients and the
    master weights, and the loss next to the same model in fp32."""
    import torch
    import torch.distributed as dist

    from models import Llama, ModelConfig
    from models.parallelize import parallelize
    from tasks.train.trainer import setup_distributed

    ctx = setup_distributed("cpu")  # the group main() opened
    cfg = ModelConfig(vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, d_model=32, ffn_hidden=64, max_seq_len=32)
    x = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(ctx.rank))
    result = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = Llama(cfg)
        layout = parallelize(model, train.ctx_mesh(ctx.device, ctx.world_size), dtype)
        seen = {}
        model.layers[0].attention.wq.register_forward_hook(
            lambda m, i, o: seen.update(weight=str(m.weight.dtype), activation=str(o.dtype)))
        _, loss = model(x, x)
        loss.backward()
        grad = model.layers[0].attention.wq.weight.grad
        result[name] = {"fsdp": layout.fsdp, "autocast": str(layout.autocast_dtype), **seen, "loss": loss.item(),
                        "master": str(model.layers[0].attention.wq.weight.dtype), "grad": str(grad.dtype),
                        "grad_is_sharded": type(grad).__name__ == "DTensor"}
    if ctx.rank == 0:
        out.write_text(json.dumps(result))
    dist.barrier()


def main() -> None:
    import torch.distributed as dist

    spec = json.loads(Path(sys.argv[1]).read_text())
    train.load_token_bytes = lambda _dir: byte_lengths()
    # one process group for all runs: re-creating it on torchrun's store after a destroy can hang
    dist.init_process_group("gloo")
    for one in spec if isinstance(spec, list) else [spec]:
        run(one)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
