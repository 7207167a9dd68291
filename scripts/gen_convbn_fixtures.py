#!/usr/bin/env python3
"""Writes test/fixtures/convbn_torch.json: Conv2d followed by eval-mode BatchNorm2d (and optional ReLU)
in PyTorch, forward and backward (dx, dW, dbias, dgamma, dbeta), for a few layer shapes.

Run with Debian's python3-torch: /usr/bin/python3 scripts/gen_convbn_fixtures.py
The test suite reads the JSON only; it never needs PyTorch.
"""
import json
import os

import torch

torch.manual_seed(4321)


def r(t):
    # 9 significant digits round-trip every float32 exactly, at half the size of a double's repr
    return [float("%.9g" % v) for v in t.detach().reshape(-1).tolist()]


cases = []
for name, n, cin, h, w, cout, k, stride, pad, dil, groups, relu, bias in [
    ("3x3 pad 1 + relu", 2, 3, 7, 6, 5, 3, 1, 1, 1, 1, True, True),
    ("3x3 stride 2, no bias", 2, 4, 9, 9, 6, 3, 2, 0, 1, 1, False, False),
    ("groups 2, dilation 2, pad 2", 1, 6, 8, 9, 4, 3, 1, 2, 2, 2, True, True),
    ("depthwise 3x3", 2, 5, 6, 7, 5, 3, 1, 1, 1, 5, True, True),
    ("1x1", 3, 7, 4, 5, 9, 1, 1, 0, 1, 1, False, True),
]:
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias)
    bn = torch.nn.BatchNorm2d(cout, eps=1e-5)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1, 0.5)
        bn.bias.normal_(0, 0.5)
    bn.eval()  # frozen statistics: the Tune-mode definition
    x = torch.randn(n, cin, h, w, requires_grad=True)
    y = bn(conv(x))
    if relu:
        y = torch.relu(y)
    dy = torch.randn_like(y)
    y.backward(dy)
    case = {
        "name": name,
        "x_shape": [n, cin, h, w],
        "w_shape": list(conv.weight.shape),
        "stride": stride, "padding": pad, "dilation": dil, "groups": groups, "relu": relu,
        "eps": bn.eps,
        "x": r(x), "weight": r(conv.weight),
        "bias": r(conv.bias) if bias else None,
        "mean": r(bn.running_mean), "var": r(bn.running_var), "gamma": r(bn.weight), "beta": r(bn.bias),
        "y_shape": list(y.shape), "y": r(y), "dy": r(dy),
        "dx": r(x.grad), "dWeight": r(conv.weight.grad),
        "dBias": r(conv.bias.grad) if bias else None,
        "dGamma": r(bn.weight.grad), "dBeta": r(bn.bias.grad),
    }
    cases.append(case)

out = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "convbn_torch.json")
with open(out, "w") as f:
    json.dump({"generator": "scripts/gen_convbn_fixtures.py", "torch": torch.__version__, "cases": cases}, f)
print(f"wrote {out}")
