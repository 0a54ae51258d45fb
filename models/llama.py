"""A Llama-style decoder-only transformer (torch only: no I/O, no tracking).

RoPE (Hugging Face `rotate_half` convention, so export to `transformers.LlamaForCausalLM` is a pure key
rename), RMSNorm, SwiGLU, grouped-query attention through `F.scaled_dot_product_attention`, optional
tied embeddings, no biases. Parameter names follow torchtitan (`layers.{i}.attention.wq.weight`, ...).

`forward(idx)` returns logits (B, T, V); `forward(idx, targets)` returns `(logits, loss)` where `loss` is
the mean cross-entropy over targets != -1 (or the per-token losses (B, T) with `reduction="none"`, which
bits-per-byte needs). Logits come back in float32 when computed with a loss.

Document masking: `forward(..., doc_ids=document_ids(idx, eot_id))` lets a position attend only to earlier
positions of its own document in a packed window (RoPE is relative, so a document then gets the same
outputs wherever it sits in the window). Without `doc_ids` attention is plain causal.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    n_layer: int = 8
    n_head: int = 8
    n_kv_head: int = 4
    """Key/value heads (grouped-query attention); must divide n_head. n_kv_head == n_head is plain MHA."""
    d_model: int = 256
    ffn_hidden: int = 768
    """Hidden width of the SwiGLU feed-forward: w2(silu(w1 x) * w3 x)."""
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    """Share the output projection with the token embedding (no `output.weight` key then)."""

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "ffn_hidden", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim (d_model/n_head = {self.head_dim}) must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    def num_params(self, embedding: bool = True) -> int:
        """Parameter count from the shape alone (equals `sum(p.numel())` of the built model)."""
        d, hd = self.d_model, self.head_dim
        attn = d * self.n_head * hd * 2 + d * self.n_kv_head * hd * 2  # wq, wo + wk, wv
        layer = attn + 3 * d * self.ffn_hidden + 2 * d  # + SwiGLU + two norms
        n = self.n_layer * layer + d  # + final norm
        n += self.vocab_size * d * (1 if self.tie_embeddings else 2) if embedding else 0
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N (matmul weights incl. the output head, not the embedding lookup)
        plus attention scores and values 12·L·d·T (the PaLM / nanoGPT formula, causal mask not discounted)."""
        t = seq_len or self.max_seq_len
        n_matmul = self.num_params(embedding=False) + self.vocab_size * self.d_model
        return 6 * n_matmul + 12 * self.n_layer * self.d_model * t


def rope_cache(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, hd) in the HF layout: frequencies repeated as [f0..f_{hd/2-1}, f0..f_{hd/2-1}]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return emb.cos(), emb.sin()


def document_ids(idx: torch.Tensor, eot_id: int) -> torch.Tensor:
    """(B, T) index of the document each position belongs to. Documents are packed as `EOT doc EOT doc ...`
    (the shard stage puts the end-of-text token before every document), so each EOT starts a new one."""
    return (idx == eot_id).cumsum(dim=1)


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean SDPA mask, True = may attend: causal and within the same document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()  # (T, T)
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same_doc & causal).unsqueeze(1)  # every row keeps its diagonal, so no row is fully masked


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, nh, T, hd); cos/sin: (T, hd), broadcast over batch and heads
    return (x * cos + rotate_half(x) * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_head != self.n_head:
            # query head h reads kv head h // n_rep (HF repeat_kv layout); expanded so every SDPA backend applies
            rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(rep, dim=1)  # (B, nh, T, hd)
            v = v.repeat_interleave(rep, dim=1)  # (B, nh, T, hd)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask (B, 1, T, T) broadcast over heads
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, d)
        return self.wo(y)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)  # gate
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)  # down
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, d)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T_max, hd)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 / nanoGPT init: N(0, 0.02), residual projections (wo, w2) scaled by 1/sqrt(2·n_layer)."""
        std, resid_std = 0.02, 0.02 / math.sqrt(2 * self.cfg.n_layer)
        nn.init.normal_(self.tok_embeddings.weight, std=std)
        for layer in self.layers:
            for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv, layer.feed_forward.w1,
                        layer.feed_forward.w3):
                nn.init.normal_(lin.weight, std=std)
            nn.init.normal_(layer.attention.wo.weight, std=resid_std)
            nn.init.normal_(layer.feed_forward.w2.weight, std=resid_std)
            layer.attention_norm.reset_parameters()
            layer.ffn_norm.reset_parameters()
        self.norm.reset_parameters()
        if self.output is not None:
            nn.init.normal_(self.output.weight, std=std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean",
                doc_ids: torch.Tensor | None = None):
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd)
        mask = None if doc_ids is None else document_causal_mask(doc_ids)  # (B, 1, T, T)
        h = self.tok_embeddings(idx)  # (B, T, d)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.norm(h)
        logits = self.output(h) if self.output is not None else F.linear(h, self.tok_embeddings.weight)  # (B, T, V)
        if targets is None:
            return logits
        logits = logits.float()
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1, reduction=reduction)
        return logits, (loss.view(B, T) if reduction == "none" else loss)
