#!/usr/bin/env python3
"""The plain-PyTorch GRPO step of issue 11, to run beside bench_grpo_step in the same session.

The same step as bench/grpo_step_bench.cpp: 8 prompts x G = 8, prompt 32 + completion 128 random
ids; one reference forward (no grad); one policy forward with selective log-softmax (logsumexp
per row, as TRL's selective_log_softmax); the clipped loss (eps 0.2) with the k3 KL at beta 0.04,
token-mean; backward; torch.optim.AdamW; on the demo's 2.9M shape (bench/pytorch_qwen2.py).

Usage: /usr/bin/python3 bench/grpo_step_pytorch.py [threads] [steps] [warmup]   (apt install python3-torch)
Prints the same last line as bench_grpo_step: median step, training tokens/s, CPU seconds per step.
"""
import resource
import statistics
import sys
import time

import torch

from pytorch_qwen2 import Qwen2

PROMPTS, GROUP, PROMPT_LEN, COMPLETION_LEN = 8, 8, 32, 128


def completion_logprobs(model, ids, mask, targets):
    logits = model.logits(model.hidden(ids, mask))[:, PROMPT_LEN - 1:-1]
    selected = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return selected - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy, reference = Qwen2("demo-2.9m"), Qwen2("demo-2.9m")
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0, 0.02)
    reference.load_state_dict(policy.state_dict())
    reference.eval()
    rows = PROMPTS * GROUP
    vocab = policy.s["vocab"]
    completion = torch.randint(0, vocab, (rows, COMPLETION_LEN))
    ids = torch.cat((torch.randint(0, vocab, (rows, PROMPT_LEN)), completion), 1)
    mask = torch.ones(rows, PROMPT_LEN + COMPLETION_LEN, dtype=torch.long)
    completion_mask = torch.ones(rows, COMPLETION_LEN)
    rewards = torch.randint(0, 2, (rows,)).float().view(PROMPTS, GROUP)
    advantages = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)).view(-1, 1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    params = sum(p.numel() for p in policy.parameters())
    print(f"plain PyTorch {torch.__version__}: {params / 1e6:.2f}M parameters, float32, {threads} thread(s); "
          f"{PROMPTS} prompts x G={GROUP}, prompt {PROMPT_LEN} + completion {COMPLETION_LEN}")
    times, cpu_times = [], []
    for step in range(warmup + steps):
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        with torch.no_grad():
            ref_logp = completion_logprobs(reference, ids, mask, completion)
        logp = completion_logprobs(policy, ids, mask, completion)
        ratio = torch.exp(logp - logp.detach())
        surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 0.8, 1.2) * advantages)
        kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
        per_token = -(surrogate - 0.04 * kl)
        loss = (per_token * completion_mask).sum() / completion_mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        seconds = time.perf_counter() - t0
        cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        print(f"step {step}{' (warm-up)' if step < warmup else ''}: {seconds:.3f} s ({cpu:.3f} CPU s), loss {value:.6f}")
        if step >= warmup:
            times.append(seconds)
            cpu_times.append(cpu)
    median, median_cpu = statistics.median(times), statistics.median(cpu_times)
    tokens = rows * COMPLETION_LEN
    print(f"median step {median:.3f} s: {tokens / median:.0f} training tokens/s; median CPU {median_cpu:.3f} s per step "
          f"({tokens / median_cpu:.0f} tokens per CPU-second)")


if __name__ == "__main__":
    main()
