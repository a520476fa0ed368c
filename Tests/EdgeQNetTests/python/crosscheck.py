#!/usr/bin/env python3
"""Cross-checks EdgeQ's model file with numpy + safetensors (docs/model-format.md).

  crosscheck.py read MODEL STATES.json   -> {"fp32": [[q...]...], "int8": [[q...]...]}
      numpy's forward pass of the model on raw states (fp32 in float32 arithmetic, and the
      int8 path exactly as EdgeQ runs it).
  crosscheck.py write MODEL SEED          -> {"states": [[...]], "actions": [...]}
      writes an fp32-only model 6-32-32-3 from numpy with its .sha256, and prints a few
      held-out states with numpy's greedy actions.
"""
import hashlib
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open


def forward_fp32(t, meta, x):
    arch = json.loads(meta["architecture"])
    layers = len(arch["hidden"]) + 1
    h = ((x - t["norm.mean"]) / t["norm.std"]).astype(np.float32)
    for l in range(layers):
        h = (h @ t[f"fp32.{l}.weight"].T + t[f"fp32.{l}.bias"]).astype(np.float32)
        if l < layers - 1:
            h = np.maximum(h, np.float32(0))
    return dueling(h, arch)


def forward_int8(t, meta, x):
    arch = json.loads(meta["architecture"])
    layers = len(arch["hidden"]) + 1
    h = ((x - t["norm.mean"]) / t["norm.std"]).astype(np.float32)
    for l in range(layers):
        inv = (np.float32(1) / t[f"int8.{l}.input_scale"]).astype(np.float32)   # (in)
        xq = np.clip(np.rint(h * inv), -127, 127).astype(np.int64)
        acc = xq @ t[f"int8.{l}.weight"].astype(np.int64).T                    # exact int32 range
        h = (acc.astype(np.float32) * t[f"int8.{l}.weight_scale"] + t[f"int8.{l}.bias"]).astype(np.float32)
        if l < layers - 1:
            h = np.maximum(h, np.float32(0))
    return h[:, :1] + h[:, 1:]          # the int8 head is centred: Q = common + action row


def dueling(o, arch):
    if not arch.get("dueling", False):
        return o
    v, a = o[:, :1], o[:, 1:]
    return v + a - a.mean(axis=1, keepdims=True)


def read(path, states_path):
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
    t = load_file(path)
    x = np.asarray(json.load(open(states_path)), dtype=np.float32)
    print(json.dumps({"fp32": forward_fp32(t, meta, x).tolist(), "int8": forward_int8(t, meta, x).tolist()}))


def write(path, seed):
    rng = np.random.default_rng(seed)
    sizes = [6, 32, 32, 3]
    t = {}
    for l in range(3):
        fan_in = sizes[l]
        t[f"fp32.{l}.weight"] = rng.uniform(-1, 1, (sizes[l + 1], fan_in)).astype(np.float32) / np.sqrt(fan_in).astype(np.float32)
        t[f"fp32.{l}.bias"] = rng.uniform(-0.1, 0.1, sizes[l + 1]).astype(np.float32)
    t["norm.mean"] = rng.normal(0, 1, 6).astype(np.float32)
    t["norm.std"] = rng.uniform(0.5, 2, 6).astype(np.float32)
    ref = rng.normal(0, 1, (32, 6)).astype(np.float32) * t["norm.std"] + t["norm.mean"]
    meta = {"format": "edgeq.qnet", "format_version": "1",
            "architecture": json.dumps({"inputs": 6, "hidden": [32, 32], "actions": 3, "dueling": False}),
            "action_names": json.dumps(["low", "mid", "high"]),
            "training": json.dumps({"trainer": "numpy crosscheck", "seed": str(seed)})}
    t["reference.states"] = ref
    t["reference.actions"] = forward_fp32(t, meta, ref).argmax(axis=1).astype(np.int64)
    save_file(t, path, metadata=meta)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with open(path + ".sha256", "w") as f:
        f.write(f"{digest}  {path.rsplit('/', 1)[-1]}\n")
    held = (rng.normal(0, 1, (50, 6)).astype(np.float32) * t["norm.std"] + t["norm.mean"]).astype(np.float32)
    print(json.dumps({"states": held.tolist(), "actions": forward_fp32(t, meta, held).argmax(axis=1).tolist()}))


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3])
    else:
        write(sys.argv[2], int(sys.argv[3]))
