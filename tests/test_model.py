"""models/: shapes, parameter counts, key names and numerical equivalence with transformers' Llama."""
from __future__ import annotations

import math

import pytest
import torch

from models import PRESETS, Llama, ModelConfig, build_config


def built_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return Llama(cfg).num_params()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_formula_matches_built_model(preset):
    cfg = PRESETS[preset]()
    assert cfg.num_params() == built_params(cfg)


def test_preset_parameter_counts():
    # TinyLlama-1.1B's published parameter count, at its 32,000-token vocabulary
    assert built_params(build_config("tinyllama-1.1b", 32000)) == 1_100_048_384
    # llm.c's GPT-2 124M has 124,439,808 params (incl. 786,432 learned position embeddings and biases we do not have)
    gpt2 = built_params(build_config("gpt2-124m", 50257))
    assert abs(gpt2 - (124_439_808 - 1024 * 768)) / 124_439_808 < 0.01
    assert 120e6 < built_params(build_config("125m", 32000)) < 130e6
    assert 9.5e6 < built_params(build_config("10m", 8192)) < 11e6
    stlm = build_config("50m")  # Super Tiny LM baseline shape
    assert (stlm.n_layer, stlm.d_model, stlm.n_head, stlm.ffn_hidden, stlm.max_seq_len) == (10, 512, 16, 1536, 512)
    assert stlm.num_params(embedding=False) == 10 * (4 * 512 * 512 + 3 * 512 * 1536 + 2 * 512) + 512
    tl = build_config("tinyllama-1.1b")
    assert (tl.n_layer, tl.d_model, tl.n_head, tl.n_kv_head, tl.max_seq_len) == (22, 2048, 32, 4, 2048)


def test_state_dict_keys_torchtitan_style():
    cfg = ModelConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32, ffn_hidden=48, max_seq_len=16)
    keys = set(Llama(cfg).state_dict())
    per_layer = ["attention_norm.weight", "attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                 "attention.wo.weight", "ffn_norm.weight", "feed_forward.w1.weight", "feed_forward.w2.weight",
                 "feed_forward.w3.weight"]
    expected = {"tok_embeddings.weight", "norm.weight", "output.weight"} | {
        f"layers.{i}.{k}" for i in range(2) for k in per_layer}
    assert keys == expected
    tied = set(Llama(ModelConfig(**{**cfg.to_dict(), "tie_embeddings": True})).state_dict())
    assert tied == expected - {"output.weight"}
    sd = Llama(cfg).state_dict()
    assert sd["layers.0.attention.wk.weight"].shape == (2 * 8, 32)  # n_kv_head * head_dim, d_model
    assert sd["layers.0.feed_forward.w2.weight"].shape == (32, 48)  # down projection


def test_matches_transformers_llama_by_key_rename():
    """Export to LlamaForCausalLM is a pure rename (RoPE rotate_half convention, GQA grouping, SwiGLU)."""
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig(vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, d_model=64, ffn_hidden=96, max_seq_len=32,
                      rope_theta=10000.0, norm_eps=1e-5)
    torch.manual_seed(0)
    ours = Llama(cfg).eval()
    with torch.no_grad():  # non-trivial norm gains so a swapped norm would show
        for name, p in ours.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    hf_cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                      attention_bias=False, mlp_bias=False)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    rename = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
    sub = {"attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attention.wq": "self_attn.q_proj",
           "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
           "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj", "feed_forward.w3": "mlp.up_proj"}
    hf_sd = {}
    for key, value in ours.state_dict().items():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            mod, leaf = rest.rsplit(".", 1)
            hf_sd[f"model.layers.{i}.{sub[mod]}.{leaf}"] = value
        else:
            mod, leaf = key.rsplit(".", 1)
            hf_sd[f"{rename[mod]}.{leaf}"] = value
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        got = ours(idx)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_causal_and_loss_reductions():
    cfg = ModelConfig(vocab_size=50, n_layer=2, n_head=4, n_kv_head=1, d_model=32, ffn_hidden=64, max_seq_len=16)
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
        assert a.shape == (2, 12, 50)
        torch.testing.assert_close(a[:, :8], b[:, :8])  # the future does not leak into the past
        assert not torch.allclose(a[:, 8:], b[:, 8:])
        targets = torch.randint(0, 50, (2, 12))
        _, mean = model(idx, targets)
        _, per_token = model(idx, targets, reduction="none")
        assert per_token.shape == (2, 12)
        torch.testing.assert_close(mean, per_token.mean())
        targets[:, :4] = -1  # ignored positions
        _, masked = model(idx, targets)
        torch.testing.assert_close(masked, per_token[:, 4:].mean())
        assert abs(mean.item() - math.log(50)) < 1.0  # near-uniform at init


def test_config_validation_messages():
    with pytest.raises(ValueError, match="n_head .* multiple of n_kv_head"):
        ModelConfig(n_head=8, n_kv_head=3)
    with pytest.raises(ValueError, match="divisible by n_head"):
        ModelConfig(d_model=100, n_head=8)
    with pytest.raises(ValueError, match="unknown model preset"):
        build_config("7b")
    with pytest.raises(ValueError, match="unknown ModelConfig fields: n_layers"):
        build_config("10m", 8192, n_layers=3)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        Llama(ModelConfig(vocab_size=10, n_layer=1, d_model=16, n_head=2, n_kv_head=2, ffn_hidden=16,
                          max_seq_len=4))(torch.zeros(1, 5, dtype=torch.long))


def test_flops_per_token():
    cfg = build_config("gpt2-124m", 50257)
    n = cfg.num_params(embedding=False) + 50257 * 768
    assert cfg.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024


def test_config_lists_exactly_the_presets():
    import typing

    from tasks.config.train import ModelChoice
    assert set(typing.get_args(ModelChoice.model_fields["preset"].annotation)) == set(PRESETS)
