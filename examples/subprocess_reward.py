#!/usr/bin/env python3
"""An example subprocess reward for grpo-cpp: JSON lines in on stdin, one JSON line out per sample.

Protocol 2 (docs/rewards.md):
Request:  {"protocol": 2, "request_id": int, "id", "prompt", "completion", "fields", "completion_tokens"}
Reply:    {"request_id": int, "score": float, "components": {name: float}, "reason": str}
          or {"request_id": int, "error": str} when the sample cannot be scored.
Every reply echoes its request's request_id; a reply with another id (or none) is an error.

This one scores 1 when the completion contains the sample's field "expected", and reports the
completion's length in characters. Standard library only.

    reward:
      functions:
        - name: subprocess
          options: {command: [python3, examples/subprocess_reward.py], timeout_s: 10}
"""
import json
import sys


def score(request):
    fields = request.get("fields") or {}
    if "expected" not in fields:
        return {"error": f"sample {request.get('id')} has no field 'expected'"}
    completion = request.get("completion", "")
    hit = str(fields["expected"]) in completion
    return {
        "score": 1.0 if hit else 0.0,
        "components": {"chars": float(len(completion))},
        "reason": "expected text found" if hit else "expected text missing",
    }


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reply = score(request)
        reply["request_id"] = request.get("request_id")
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()  # one reply per request, without waiting for more input


if __name__ == "__main__":
    main()
