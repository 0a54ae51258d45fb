"""Checkpoint (data/model) → Hugging Face `LlamaForCausalLM` folder that `AutoModelForCausalLM` and
`AutoTokenizer` load offline.

Our model uses HF's rotate_half RoPE layout, so the weights need no permutation: the export is a key rename
(torchtitan names → HF names), a `LlamaConfig` built from our `ModelConfig`, and the tokenizer as a
`PreTrainedTokenizerFast` (`tokenizer.json`; converted from the tiktoken ranks when the model folder has none).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

log = logging.getLogger("tinyfoundry.evaluate")

EOT = "<|endoftext|>"
# ours → HF, per layer (SwiGLU: w1 = gate, w3 = up, w2 = down)
_LAYER_KEYS = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)")


def hf_key(key: str) -> str:
    """`layers.3.attention.wq.weight` → `model.layers.3.self_attn.q_proj.weight` (KeyError for unknown keys)."""
    fixed = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if key in fixed:
        return fixed[key]
    m = _LAYER_RE.fullmatch(key)
    if not m or m.group(2) not in _LAYER_KEYS:
        raise KeyError(f"checkpoint key {key!r} has no Hugging Face Llama counterpart")
    return f"model.layers.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}"


def read_model_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the model folder must hold config.json (ModelConfig fields)")
    return json.loads(path.read_text())


def load_our_model(model_dir: str | Path):
    """Our `models.llama.Llama` with the checkpoint's weights (fp32, eval mode): the parity reference."""
    from safetensors.torch import load_file

    from models.llama import Llama, ModelConfig

    raw = read_model_config(Path(model_dir))
    fields = ModelConfig.__dataclass_fields__
    model = Llama(ModelConfig(**{k: v for k, v in raw.items() if k in fields}))
    model.load_state_dict(load_file(Path(model_dir) / "model.safetensors"), strict=True)
    return model.eval()


def find_tokenizer_dir(model_dir: Path) -> Path | None:
    """The folder holding the tokenizer files: the model folder itself or its tokenizer/ subfolder."""
    for cand in (model_dir, model_dir / "tokenizer"):
        if (cand / "tokenizer.json").exists() or (cand / "tokenizer.tiktoken").exists():
            return cand
    return None


def tiktoken_to_hf(enc):
    """A `tokenizers.Tokenizer` with the same ids as a `tiktoken.Encoding` (byte-level BPE + its split regex)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _FromEncoding(TikTokenConverter):
        # transformers' converter reads ranks from a .tiktoken file; ours are already in memory
        load_tiktoken_bpe = staticmethod(lambda _: enc._mergeable_ranks)

    specials = sorted(enc._special_tokens, key=enc._special_tokens.get)
    if any(enc._special_tokens[t] != len(enc._mergeable_ranks) + i for i, t in enumerate(specials)):
        raise ValueError("special token ids must follow the mergeable ranks contiguously to convert to HF")
    return _FromEncoding(vocab_file="<in memory>", pattern=enc._pat_str, extra_special_tokens=specials).converted()


def build_hf_tokenizer(model_dir: Path):
    """`PreTrainedTokenizerFast` from tokenizer.json, or converted from tokenizer.tiktoken via tasks.tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok_dir = find_tokenizer_dir(model_dir)
    if tok_dir is None:
        raise FileNotFoundError(f"no tokenizer.json or tokenizer.tiktoken in {model_dir} or {model_dir / 'tokenizer'}")
    tok_file = tok_dir / "tokenizer.json"
    if not tok_file.exists():  # only tiktoken ranks: convert with transformers' own tiktoken converter
        from tasks.tokenizer import load_tokenizer

        tok = PreTrainedTokenizerFast(tokenizer_object=tiktoken_to_hf(load_tokenizer(tok_dir)))
    else:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file))
    specials = [t.content for t in tok.backend_tokenizer.get_added_tokens_decoder().values() if t.special]
    eot = EOT if EOT in tok.get_vocab() else (specials[0] if specials else None)
    if eot is None:
        raise ValueError(f"{tok_file} defines no special end-of-text token; the tokenizer needs one (e.g. {EOT})")
    # one token ends documents, starts generation and pads: it is the only special token pretraining saw
    tok.add_special_tokens({"eos_token": eot, "bos_token": eot, "pad_token": eot})
    return tok


def llama_config(raw: dict, eot_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=raw["vocab_size"], hidden_size=raw["d_model"], intermediate_size=raw["ffn_hidden"],
        num_hidden_layers=raw["n_layer"], num_attention_heads=raw["n_head"], num_key_value_heads=raw["n_kv_head"],
        head_dim=raw["d_model"] // raw["n_head"], max_position_embeddings=raw["max_seq_len"],
        rms_norm_eps=raw["norm_eps"], rope_parameters={"rope_type": "default", "rope_theta": float(raw["rope_theta"])},
        tie_word_embeddings=bool(raw.get("tie_embeddings", False)), hidden_act="silu", attention_bias=False,
        mlp_bias=False, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id,
        architectures=["LlamaForCausalLM"], dtype="float32",
    )


def export_hf(model_dir: str | Path, out_dir: str | Path) -> dict:
    """Write `out_dir` (config.json, model.safetensors, generation_config.json, tokenizer files). Returns stats."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    raw = read_model_config(model_dir)
    tok = build_hf_tokenizer(model_dir)
    if len(tok) > raw["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tok)} tokens but the model's vocab_size is {raw['vocab_size']}")
    config = llama_config(raw, tok.eos_token_id)

    state = {hf_key(k): v.float() for k, v in load_file(model_dir / "model.safetensors").items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    # strict: every HF parameter must come from the checkpoint (tied lm_head is re-tied below)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.do_sample = False
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("exported %s (%.2fM parameters, vocab %d) to Hugging Face format in %s",
             model_dir, n_params / 1e6, raw["vocab_size"], out_dir)
    return {"params": n_params, "vocab_size": raw["vocab_size"], "tied": config.tie_word_embeddings}
