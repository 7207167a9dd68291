#!/usr/bin/env python3
"""Writes examples/models/conv-relu.onnx: a small Conv + ReLU feature extractor for the interop example.

Run with Debian's python3-torch: /usr/bin/python3 scripts/gen_example_models.py
"""
import os

import torch

torch.manual_seed(7)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
out = os.path.join(os.path.dirname(__file__), "..", "examples", "models", "conv-relu.onnx")
torch.onnx.export(model, torch.randn(1, 3, 16, 16), out, input_names=["image"], output_names=["features"],
                  dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=13)
print("wrote", os.path.normpath(out), os.path.getsize(out), "bytes")
