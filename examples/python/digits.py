#!/usr/bin/env python3
"""Classifies the 360 test digits with a model compiled by lopper, from Python.

    lopper compile examples/digits_mlp.lop -o build/libdigits_mlp.so
    python3 examples/python/digits.py build/libdigits_mlp.so ../shared/data/digits/digits.safetensors

Needs numpy and safetensors (pip install numpy safetensors). The library's
entry point is int digits_mlp_run(const float *x, float *probabilities, int64_t batch).
"""
import ctypes
import sys

import numpy as np
from safetensors.numpy import load_file

library, data = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL(library)
run = lib.digits_mlp_run
run.restype = ctypes.c_int
run.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float), ctypes.c_int64]

tensors = load_file(data)
x = np.ascontiguousarray(tensors["test_x"], dtype=np.float32)
y = tensors["test_y"]
probabilities = np.empty((x.shape[0], 10), dtype=np.float32)
pointer = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
code = run(pointer(x), pointer(probabilities), x.shape[0])
if code != 0:
    sys.exit(f"digits_mlp_run failed with {code}")
correct = int((probabilities.argmax(axis=1) == y).sum())
print(f"accuracy: {correct / len(y):.4f} ({correct}/{len(y)})")
