"""Commands on registered models.

`python -m tasks generate --prompt "..." [--model models:/<name>@champion] [--max-new-tokens N]`
    loads a registered version (default: the champion) and prints a greedy completion of each prompt.
`python -m tasks evaluate --model models:/<name>@<alias|version> [--out DIR]`
    evaluates any registered version exactly like the evaluate stage (same params), logs its scores as the
    version's metrics and lets it compete for the `champion` alias.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from tasks.model_registry import parse_model_uri, resolve_version

log = logging.getLogger("tinyfoundry.evaluate")


def find_model_dir(root: Path) -> Path:
    """The folder in a downloaded artifact tree that holds our checkpoint (model.safetensors + config.json)."""
    for cfg in sorted(root.rglob("config.json"), key=lambda p: len(p.parts)):
        if (cfg.parent / "model.safetensors").exists() and "d_model" in json.loads(cfg.read_text()):
            return cfg.parent
    raise SystemExit(f"the registered artifacts in {root} hold no model.safetensors + config.json (our checkpoint)")


def _client(params: str, profile: str | None):
    from mlflow import MlflowClient

    from tasks.config import load_config
    from tasks.tracking import setup

    cfg = load_config(params, profile)
    setup(cfg.tracking.experiment, cfg.tracking.tracking_uri)
    return cfg, MlflowClient()


def generate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks generate", description="Complete prompts with a registered model.")
    parser.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    parser.add_argument("--model", help="models:/<name>@<alias|version> (default: models:/<tracking.model_name>@champion)")
    parser.add_argument("--max-new-tokens", type=int, help="default: evaluate.max_new_tokens")
    parser.add_argument("--params", default=os.environ.get("TINYFOUNDRY_PARAMS", "params.yaml"))
    parser.add_argument("--profile")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .intrinsic import generate
    from .registry import download_hf

    cfg, client = _client(args.params, args.profile)
    name, ref = parse_model_uri(args.model or f"models:/{cfg.tracking.model_name}@champion")
    version = resolve_version(client, name, ref)
    with tempfile.TemporaryDirectory(prefix="tinyfoundry-generate-") as tmp:
        hf = download_hf(version, Path(tmp) / "hf")
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(hf)
        outs = generate(model, tokenizer, args.prompt, args.max_new_tokens or cfg.evaluate.max_new_tokens)
    for g in outs:
        print(g["prompt"] + g["completion"])
    return 0


def evaluate_model_main(argv: list[str]) -> int:
    """`python -m tasks evaluate --model models:/<name>@<ref>`: the evaluate stage on a registered version."""
    parser = argparse.ArgumentParser(prog="python -m tasks evaluate --model", description=evaluate_model_main.__doc__)
    parser.add_argument("--model", required=True, help="models:/<name>@<alias|version>")
    parser.add_argument("--in", dest="inputs", action="append", default=[], metavar="NAME=PATH",
                        help="eval=... and shards=... (default data/raw/eval, data/shards)")
    parser.add_argument("--out", type=Path, help="default data/eval_registry/<name>-v<version>")
    parser.add_argument("--params", default=os.environ.get("TINYFOUNDRY_PARAMS", "params.yaml"))
    parser.add_argument("--profile")
    args = parser.parse_args(argv)

    from tasks.__main__ import parse_inputs, run_stage
    from tasks.model_registry import SHA_TAG, version_step

    from . import CANDIDATES_FILE
    from .registry import download_hf, tag_int

    cfg, client = _client(args.params, args.profile)
    name, ref = parse_model_uri(args.model)
    version = resolve_version(client, name, ref)
    if name != cfg.tracking.model_name:
        raise SystemExit(f"{args.model} is not tracking.model_name ({cfg.tracking.model_name}); champion selection "
                         "works on that model: set tracking.model_name or use a profile")
    inputs = {"eval": Path("data/raw/eval"), "shards": Path("data/shards"), **parse_inputs(args.inputs)}
    out = args.out or Path("data/eval_registry") / f"{name}-v{version.version}"
    with tempfile.TemporaryDirectory(prefix="tinyfoundry-evaluate-") as tmp:
        # the version is the one candidate: the stage scores it, registry.update_champion logs its metrics
        download_hf(version, Path(tmp) / "v")
        step = version_step(version)
        entry = {"version": int(version.version), "step": step if step >= 0 else None, "path": "v",
                 "tokens_seen": tag_int(version.tags.get("tokens_seen")), "sha256": version.tags.get(SHA_TAG)}
        (Path(tmp) / CANDIDATES_FILE).write_text(json.dumps([entry]))
        inputs["candidates"] = Path(tmp)
        stats = run_stage("evaluate", None, inputs, out, cfg, metrics_file=out.with_name(out.name + ".metrics.json"))
    print(json.dumps({"model_version": int(version.version), "champion_version": stats.get("champion_version"),
                      "champion_moved": stats.get("champion_moved")}))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(generate_main(sys.argv[1:]))
