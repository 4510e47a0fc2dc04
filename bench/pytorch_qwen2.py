"""A Qwen2 decoder in plain PyTorch, written after transformers' modeling_qwen2 eager path
(float32 RMSNorm, rotate_half RoPE, repeated kv heads, an additive mask, softmax in float32, a
concatenated KV cache as DynamicCache): the peer the benchmarks in bench/*_pytorch.py run beside
grpo-cpp's own. It is not transformers itself, which Debian does not package; python3-torch is
(`apt install python3-torch`; run the scripts with /usr/bin/python3).
"""
import math

import torch
from torch import nn

SHAPES = {
    # the demo's 2.9M shape (../shared/notes/cpu-performance.md), as the C++ benchmarks' demo-2.9m
    "demo-2.9m": dict(vocab=64, hidden=256, intermediate=688, layers=4, heads=4, kv_heads=2, head_dim=64, theta=1e4),
    "qwen2.5-0.5b": dict(vocab=151936, hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, head_dim=64,
                         theta=1e6),
}
EPS = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + EPS)).to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        h, d = s["hidden"], s["head_dim"]
        self.q_proj = nn.Linear(h, s["heads"] * d, bias=True)
        self.k_proj = nn.Linear(h, s["kv_heads"] * d, bias=True)
        self.v_proj = nn.Linear(h, s["kv_heads"] * d, bias=True)
        self.o_proj = nn.Linear(s["heads"] * d, h, bias=False)
        self.gate_proj = nn.Linear(h, s["intermediate"], bias=False)
        self.up_proj = nn.Linear(h, s["intermediate"], bias=False)
        self.down_proj = nn.Linear(s["intermediate"], h, bias=False)
        self.input_layernorm = RMSNorm(h)
        self.post_attention_layernorm = RMSNorm(h)

    def attention(self, x, cos, sin, mask, cache):
        b, t, _ = x.shape
        heads, kv, d = self.s["heads"], self.s["kv_heads"], self.s["head_dim"]
        q = self.q_proj(x).view(b, t, heads, d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, kv, d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:  # DynamicCache.update: concatenate along the sequence
            if cache[0] is not None:
                k, v = torch.cat((cache[0], k), 2), torch.cat((cache[1], v), 2)
            cache[0], cache[1] = k, v
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d) + mask
        weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, heads * d)
        return self.o_proj(out)

    def forward(self, h, cos, sin, mask, cache):
        h = h + self.attention(self.input_layernorm(h), cos, sin, mask, cache)
        x = self.post_attention_layernorm(h)
        return h + self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2(nn.Module):
    def __init__(self, shape):
        super().__init__()
        s = SHAPES[shape]
        self.s = s
        self.embed_tokens = nn.Embedding(s["vocab"], s["hidden"])
        self.layers = nn.ModuleList(Layer(s) for _ in range(s["layers"]))
        self.norm = RMSNorm(s["hidden"])
        d = s["head_dim"]
        inv_freq = 1.0 / (s["theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def hidden(self, ids, attention_mask, caches=None):
        """ids [B, t]: the last t positions of attention_mask [B, S] (S > t with a cache)."""
        b, t = ids.shape
        keys = attention_mask.shape[1]
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, keys - t:]
        freqs = positions[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        lowest = torch.finfo(torch.float32).min
        causal = torch.full((t, keys), lowest).triu(keys - t + 1)
        padding = (1.0 - attention_mask[:, None, None, :].float()) * lowest
        mask = (causal[None, None] + padding).clamp_min(lowest)
        h = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, None if caches is None else caches[i])
        return self.norm(h)

    def logits(self, hidden):
        return (hidden @ self.embed_tokens.weight.t()).float()  # tied head
