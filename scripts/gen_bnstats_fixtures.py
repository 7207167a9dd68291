#!/usr/bin/env python3
"""Writes test/fixtures/bnstats_running.json: PyTorch BatchNorm2d in training mode over a few batches.

Run with Debian's python3-torch: /usr/bin/python3 scripts/gen_bnstats_fixtures.py
The test suite reads the JSON only; it never needs PyTorch.
"""
import json
import os

import torch

torch.manual_seed(1234)
cases = []
for name, shape, momentum, offset, scale in [
    ("momentum 0.1", (3, 4, 5, 5), 0.1, 0.0, 1.0),
    ("momentum 0.3, odd C", (2, 5, 3, 3), 0.3, 2.0, 3.0),
    ("cumulative (momentum None)", (2, 3, 4, 4), None, -1.0, 0.5),
    ("N=1, large offset", (1, 3, 2, 2), 0.1, 1e4, 1e-2),
]:
    bn = torch.nn.BatchNorm2d(shape[1], momentum=momentum, eps=1e-5)
    bn.train()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    case = {
        "name": name,
        "shape": list(shape),
        "momentum": momentum,
        "eps": 1e-5,
        "gamma": bn.weight.detach().tolist(),
        "beta": bn.bias.detach().tolist(),
        "runningMean": bn.running_mean.tolist(),
        "runningVar": bn.running_var.tolist(),
        "batches": [],
    }
    for _ in range(3):
        x = (torch.randn(*shape) * scale + offset).float()
        y = bn(x)
        case["batches"].append({
            "x": x.flatten().tolist(),
            "y": y.detach().flatten().tolist(),
            "runningMean": bn.running_mean.tolist(),
            "runningVar": bn.running_var.tolist(),
            "numBatchesTracked": int(bn.num_batches_tracked),
        })
    cases.append(case)

out = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "bnstats_running.json")
with open(out, "w") as f:
    json.dump({"generator": "scripts/gen_bnstats_fixtures.py", "torch": torch.__version__, "cases": cases}, f)
print("wrote", os.path.normpath(out))
