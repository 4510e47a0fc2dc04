#!/usr/bin/env python3
"""Plain-PyTorch sampling with a KV cache, as transformers' generate() does it, to run beside
bench_generation in the same session (same shapes, same columns).

Per step, as generate() 4.45 with do_sample: the model on the new token with a concatenated KV
cache and an additive mask over every key; top-p as TopPLogitsWarper (a full-vocabulary sort,
softmax, cumsum, scatter); softmax and torch.multinomial. Prefill runs the head on the last
position only (num_logits_to_keep = 1). "decode" is generate(N) minus generate(1), per token after
each row's first, as bench_generation counts it. Model: bench/pytorch_qwen2.py.

Usage: /usr/bin/python3 bench/generation_pytorch.py SHAPE [threads] [prompt_len] [new_tokens] [top_p] [rows...]
  SHAPE: demo-2.9m | qwen2.5-0.5b
"""
import statistics
import sys
import time

import torch

from pytorch_qwen2 import Qwen2


def top_p_filter(scores, top_p):
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = 0
    return scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))


def generate(model, prompt, new_tokens, top_p, timings=None):
    rows = prompt.shape[0]
    mask = torch.ones_like(prompt)
    caches = [[None, None] for _ in model.layers]
    t0 = time.perf_counter()
    logits = model.logits(model.hidden(prompt, mask, caches)[:, -1])
    if timings is not None:
        timings.append(time.perf_counter() - t0)
    unfinished = torch.ones(rows, dtype=torch.bool)
    out = []
    for step in range(new_tokens):
        scores = top_p_filter(logits, top_p) if top_p < 1.0 else logits
        token = torch.multinomial(scores.softmax(dim=-1), 1).squeeze(1)
        out.append(token)
        unfinished &= token != -1  # generate()'s stopping check (no stop token here)
        if step + 1 == new_tokens or not bool(unfinished.any()):
            break
        mask = torch.cat((mask, torch.ones(rows, 1, dtype=mask.dtype)), 1)
        logits = model.logits(model.hidden(token[:, None], mask, caches)[:, -1])
    return torch.stack(out, 1)


def main():
    shape = sys.argv[1] if len(sys.argv) > 1 else "demo-2.9m"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    top_p = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    batches = [int(a) for a in sys.argv[6:]] or [1, 16, 64]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Qwen2(shape).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    print(f"plain PyTorch {torch.__version__} generate: {shape} {params / 1e6:.1f}M parameters, float32, {threads} thread(s), "
          f"prompt {prompt_len} + {new_tokens} new tokens, top-p {top_p}")
    print(f"{'rows':>6} {'prefill tok/s':>14} {'decode tok/s':>14}")
    with torch.no_grad():
        for rows in batches:
            prompt = torch.randint(0, model.s["vocab"], (rows, prompt_len))
            generate(model, prompt, 2, top_p)  # warm-up
            prefill, one, whole = [], [], []
            for _ in range(2):
                t0 = time.perf_counter()
                generate(model, prompt, 1, top_p, prefill)
                one.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                generate(model, prompt, new_tokens, top_p)
                whole.append(time.perf_counter() - t0)
            decode_seconds = min(whole) - min(one)
            print(f"{rows:>6} {rows * prompt_len / min(prefill):>14.0f} "
                  f"{rows * (new_tokens - 1) / decode_seconds if new_tokens > 1 else 0:>14.0f}")


if __name__ == "__main__":
    main()
