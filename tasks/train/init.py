"""Continued pretraining: `train.init_from` starts from existing weights instead of a random init.

A source is one of
  `models:/<name>@<alias>`, `models:/<name>/<version>`  a registered version: rank 0 downloads it into
                                   `<checkpoint_dir>/init/` and the alias is pinned to the version it named then
  a model folder                   this pipeline's `data/model` (config.json with ModelConfig fields +
                                   model.safetensors), e.g. a downloaded registered version
  a Hugging Face folder            `LlamaForCausalLM`: config.json with model_type llama + *.safetensors (keys
                                   renamed with the table `tasks.evaluate.export` uses for the opposite way)
  a DCP checkpoint                 `<checkpoint_dir>/<fingerprint>/step_NNNNNN`, or the folder holding such steps
                                   (its latest); only the model weights are read

Only weights are taken: optimizer state, the schedule (warmup included), the data order and the step
count start afresh. The source's parameter shapes must equal the configured model's (checked when the
config loads for local sources, before the first step for registry ones); max_seq_len may differ (RoPE
has no weights). The shards must have been encoded with the source's tokenizer, checked before training.
`identity()` (source, kind, weights sha256, registry version) goes into the run fingerprint, meta.json,
the MLflow run and the registered version, so the lineage of every model names its starting weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("tinyfoundry.train")

REGISTRY_URI = re.compile(r"models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
SHAPE_FIELDS = ("vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "ffn_hidden", "tie_embeddings")
"""ModelConfig fields that decide parameter shapes (and the embedding tie); they must match the source."""
FUNCTION_FIELDS = ("rope_theta", "norm_eps")
"""Fields without weights that change the function: a difference is allowed but logged."""


class InitError(ValueError):
    """`train.init_from` names something that cannot initialise this model."""


@dataclass
class InitSource:
    uri: str
    """As configured."""
    kind: str
    """registry | model | hf | checkpoint"""
    path: Path
    """The local folder the weights are read from."""
    model_config: dict
    """The source's shape as ModelConfig fields."""
    tokenizer_sha256: str | None = None
    """Hash of our tokenizer the source was trained with (not known for HF folders: their vocabulary is compared)."""
    sha256: str | None = None
    """Identity of the weights (see `weights_sha256`)."""
    registry: dict = field(default_factory=dict)
    """name, version, run_id of a registered version."""

    def identity(self) -> dict:
        return {"uri": self.uri, "kind": self.kind, "sha256": self.sha256, **self.registry}


def is_registry_uri(uri: str) -> bool:
    return uri.startswith("models:/")


def parse_registry_uri(uri: str) -> tuple[str, str]:
    m = REGISTRY_URI.fullmatch(uri.strip())
    if not m:
        raise InitError(f"must look like models:/<name>@<alias> or models:/<name>/<version>, got {uri!r}")
    return m["name"], m["alias"] or m["version"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InitError(f"cannot read {path}: {e}") from None


def _checkpoint_dir(path: Path) -> Path | None:
    """`path` itself when it is a DCP checkpoint step folder, else its latest complete step folder."""
    from .checkpoint import latest

    if (path / ".metadata").is_file() and (path / "meta.json").is_file():
        return path
    return latest(path)


def hf_model_config(hf: dict, where: Path) -> dict:
    """A Hugging Face LlamaConfig (config.json) as ModelConfig fields; InitError for what our model cannot express."""
    if hf.get("model_type") != "llama":
        raise InitError(f"{where} holds a {hf.get('model_type')!r} model; only Llama (LlamaForCausalLM) folders "
                        "can initialise this model")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise InitError(f"{where}: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported "
                        "(our model uses plain RoPE)")
    unsupported = [k for k in ("attention_bias", "mlp_bias") if hf.get(k)]
    if hf.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act={hf['hidden_act']}")
    heads, d = hf["num_attention_heads"], hf["hidden_size"]
    if hf.get("head_dim") not in (None, d // heads):
        unsupported.append(f"head_dim={hf['head_dim']} (≠ hidden_size/heads)")
    if unsupported:
        raise InitError(f"{where}: {', '.join(unsupported)} not supported by our Llama")
    return {"vocab_size": hf["vocab_size"], "n_layer": hf["num_hidden_layers"], "n_head": heads,
            "n_kv_head": hf.get("num_key_value_heads") or heads, "d_model": d, "ffn_hidden": hf["intermediate_size"],
            "max_seq_len": hf.get("max_position_embeddings", 2048),
            "rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            "norm_eps": hf.get("rms_norm_eps", 1e-6), "tie_embeddings": bool(hf.get("tie_word_embeddings", False))}


def inspect_local(uri: str, path: Path | None = None) -> InitSource:
    """What a local source is and its shape, from its small files only (no weights read, nothing hashed)."""
    path = Path(path or uri)
    if not path.exists():
        raise InitError(f"{path} does not exist (expected a model folder, a Hugging Face Llama folder, a DCP "
                        "checkpoint or models:/<name>@<alias>)")
    config = path / "config.json"
    if config.is_file():
        raw = _read_json(config)
        if "model_type" in raw or "architectures" in raw:
            if not list(path.glob("*.safetensors")):
                raise InitError(f"{path} has no *.safetensors weights (convert pytorch_model.bin with transformers' "
                                "save_pretrained(safe_serialization=True) first)")
            return InitSource(uri, "hf", path, hf_model_config(raw, path))
        if "d_model" in raw:
            if not (path / "model.safetensors").is_file():
                raise InitError(f"{path} has config.json but no model.safetensors")
            from models.llama import ModelConfig

            fields = {k: v for k, v in raw.items() if k in ModelConfig.__dataclass_fields__}
            return InitSource(uri, "model", path, fields, _model_tokenizer_sha(path))
        raise InitError(f"{config} is neither our ModelConfig nor a Hugging Face config")
    step = _checkpoint_dir(path) if path.is_dir() else None
    if step is not None:
        meta = _read_json(step / "meta.json")
        if "model_config" not in meta:
            raise InitError(f"{step}/meta.json has no model_config: not a checkpoint of this pipeline's train stage")
        return InitSource(uri, "checkpoint", step, meta["model_config"], meta.get("tokenizer_sha256"))
    raise InitError(f"{path} is not a model folder (config.json + model.safetensors), a Hugging Face Llama folder "
                    "or a DCP checkpoint (step_NNNNNN with .metadata and meta.json)")


def _model_tokenizer_sha(path: Path) -> str | None:
    meta = _read_json(path / "meta.json") if (path / "meta.json").is_file() else {}
    if meta.get("tokenizer_sha256"):
        return meta["tokenizer_sha256"]
    tok_meta = path / "tokenizer" / "meta.json"
    return _read_json(tok_meta).get("sha256") if tok_meta.is_file() else None


def shape_mismatches(source: dict, configured: dict, check_vocab: bool = True) -> list[str]:
    fields = SHAPE_FIELDS if check_vocab else tuple(f for f in SHAPE_FIELDS if f != "vocab_size")
    return [f"{f} {source.get(f)!r} in the source vs {configured.get(f)!r} configured" for f in fields
            if source.get(f) != configured.get(f)]


def check_shape(source: InitSource, configured: dict, check_vocab: bool = True) -> None:
    bad = shape_mismatches(source.model_config, configured, check_vocab)
    if bad:
        raise InitError(f"{source.uri} does not fit train.model: {'; '.join(bad)}. Set train.model.preset/overrides "
                        "to the source's shape")
    for f in FUNCTION_FIELDS:
        if f in source.model_config and source.model_config[f] != configured.get(f):
            log.warning("init_from: %s is %s in %s but %s here; the weights are used with %s", f,
                        source.model_config[f], source.uri, configured.get(f), configured.get(f))


def weights_sha256(source: InitSource) -> str:
    """sha256 of the weight files (safetensors), or of a DCP checkpoint's metadata + meta.json (fingerprint,
    step, loss curve: hashing the sharded optimizer state as well would read every byte of a big run)."""
    h = hashlib.sha256()
    from tasks.hashing import file_sha256

    if source.kind == "checkpoint":
        files = [source.path / ".metadata", source.path / "meta.json"]
    elif source.kind in ("hf", "registry"):
        files = sorted(source.path.glob("*.safetensors"))
    else:
        files = [source.path / "model.safetensors"]
    if len(files) == 1 and source.kind != "checkpoint":
        return file_sha256(files[0])  # equals the registry's checkpoint_sha256 tag for our model folders
    for f in files:
        h.update(f.name.encode() + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def resolve(uri: str, download_dir: Path) -> InitSource:
    """The source with its weights local and hashed (rank 0 only: it may download from the registry)."""
    if not is_registry_uri(uri):
        source = inspect_local(uri)
    else:
        import mlflow

        from tasks.evaluate.registry import download_hf
        from tasks.model_registry import SHA_TAG, resolve_version
        from tasks.tracking import flush_current

        name, ref = parse_registry_uri(uri)
        flush_current()  # the stage's run sets MLflow's tracking URI in its own thread
        try:
            version = resolve_version(mlflow.MlflowClient(), name, ref)
        except SystemExit as e:
            raise InitError(str(e)) from None
        dest = download_dir / f"{name}-v{version.version}"
        if not (dest / ".complete").is_file():
            from tasks.atomic import atomic_dir

            with atomic_dir(dest, resume=False) as tmp:
                download_hf(version, tmp)  # versions are transformers models: a Hugging Face folder
                (tmp / ".complete").write_text(uri + "\n")
        source = inspect_local(uri, dest)
        source.kind = "registry"
        source.registry = {"name": name, "version": str(version.version), "run_id": version.run_id or ""}
        source.tokenizer_sha256 = source.tokenizer_sha256 or (version.tags or {}).get("tokenizer_sha256")
        log.info("init_from %s is version %s (downloaded to %s)", uri, version.version, dest)
        # identity: the version's checkpoint sha (of our model.safetensors), the one the registry searches by
        source.sha256 = (version.tags or {}).get(SHA_TAG) or weights_sha256(source)
        return source
    source.sha256 = weights_sha256(source)
    return source


def load_weights(source: InitSource, model) -> None:
    """Collective for checkpoints (DCP). Copies the source's weights into `model` (an unsharded Llama), strictly:
    every parameter must come from the source."""
    from safetensors.torch import load_file

    if source.kind == "checkpoint":
        from .checkpoint import load_model_weights

        load_model_weights(source.path, model)
        return
    if source.kind in ("hf", "registry"):  # registry versions download as Hugging Face folders
        from tasks.evaluate.export import hf_key

        ours = {hf_key(k): k for k in model.state_dict()}
        state = {}
        for f in sorted(source.path.glob("*.safetensors")):
            for k, v in load_file(f).items():
                if k in ours:
                    state[ours[k]] = v
                elif not (k == "lm_head.weight" and model.cfg.tie_embeddings):
                    raise InitError(f"{f.name}: weight {k!r} has no counterpart in our Llama")
    else:
        state = load_file(source.path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InitError(f"{source.uri}: weights do not match the model (missing {missing[:5]}, unexpected "
                        f"{unexpected[:5]})")


def check_tokenizer(source: InitSource, shards_tokenizer_sha: str | None, tokenizer_dir: Path | None) -> None:
    """The shards must be encoded with the tokenizer the source was trained with; else ids mean other tokens."""
    advice = ("Train on shards encoded with the source model's tokenizer, or start from a model trained with this "
              "pipeline's tokenizer.")
    if source.kind != "hf":
        if source.tokenizer_sha256 is None:
            raise InitError(f"{source.uri} does not record its tokenizer (no tokenizer_sha256 in its meta.json), so "
                            "it cannot be checked against the shards'")
        if source.tokenizer_sha256 != shards_tokenizer_sha:
            raise InitError(f"tokenizer mismatch: {source.uri} was trained with tokenizer {source.tokenizer_sha256[:12]}"
                            f"…, the shards were encoded with {str(shards_tokenizer_sha)[:12]}…. {advice}")
        return
    mine = _our_vocab(tokenizer_dir, shards_tokenizer_sha)
    from tokenizers import Tokenizer

    tok_file = source.path / "tokenizer.json"
    if not tok_file.is_file():
        raise InitError(f"{source.path} has no tokenizer.json to compare with the shards' tokenizer")
    theirs = Tokenizer.from_file(str(tok_file)).get_vocab(with_added_tokens=True)
    if theirs != mine:
        differ = sorted(set(theirs.items()) ^ set(mine.items()), key=lambda kv: kv[1])
        raise InitError(f"tokenizer mismatch: {tok_file} has {len(theirs)} tokens, the shards' tokenizer "
                        f"{len(mine)}; {len(differ)} (token, id) pairs differ, e.g. {differ[:3]}. {advice}")


def _our_vocab(tokenizer_dir: Path | None, shards_tokenizer_sha: str | None) -> dict[str, int]:
    """Our tokenizer's vocabulary written as a byte-level BPE tokenizer.json spells it (GPT-2 byte alphabet)."""
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "meta.json").is_file():
        raise InitError("init_from a Hugging Face folder needs the tokenizer the shards were made with "
                        "(--in tokenizer=data/tokenizer) to compare vocabularies")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from tasks.tokenizer import load_tokenizer

    sha = _read_json(Path(tokenizer_dir) / "meta.json").get("sha256")
    if shards_tokenizer_sha and sha != shards_tokenizer_sha:
        raise InitError(f"{tokenizer_dir} (tokenizer {str(sha)[:12]}…) is not the tokenizer the shards were encoded "
                        f"with ({shards_tokenizer_sha[:12]}…)")
    enc = load_tokenizer(tokenizer_dir)
    byte_char = bytes_to_unicode()
    vocab = {"".join(byte_char[b] for b in tok): rank for tok, rank in enc._mergeable_ranks.items()}
    return {**vocab, **enc._special_tokens}
