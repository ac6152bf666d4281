#!/usr/bin/env python3
"""Copies the ONNX package's own backend node tests for the operators lopper imports.

Nothing here is computed by lopper: every case (model, inputs, expected outputs) is
the ONNX project's, produced by the reference implementations in the `onnx` Python
package (onnx/backend/test/case/node/*.py). Run from the repository root:

    python3 -m venv /tmp/onnx && /tmp/onnx/bin/pip install onnx==1.23.2 numpy
    /tmp/onnx/bin/python tests/data/onnx-node/make_cases.py

A case belongs to an operator when its model uses that operator alone. The
`_expanded` variants (the operator written out as a function of others) are
cases of the operators they use; they are copied when lopper imports all of them.
Writes tests/data/onnx-node/<case>/model.onnx and test_data_set_N/{input,output}_K.pb,
the layout of onnx/backend/test/data/node, cases.txt (one case name per line), and
skipped.txt: cases whose inputs or outputs are sequences or optionals, not tensors.
"""
import os
import shutil
import warnings

import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

# Must match frontend/src/onnx/import.rs SUPPORTED_OPS.
SUPPORTED = {
    "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "Conv", "Div",
    "Erf", "Exp", "Flatten", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "Identity",
    "LayerNormalization", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Pow", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax",
    "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
}
# The operators the issue names; the others above are helpers for shape computations
# and their own cases are not copied.
NAMED = {
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Exp", "Erf",
    "Sqrt", "Pow", "Softmax", "LogSoftmax", "Conv", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Reshape", "Shape", "Transpose", "Squeeze", "Unsqueeze",
    "Concat", "Identity", "Constant", "BatchNormalization", "LayerNormalization", "ReduceMean",
    "ReduceSum", "ReduceMax", "Gelu", "Split",
}

HERE = os.path.dirname(os.path.abspath(__file__))


def write_tensor(path, value, info):
    if isinstance(value, onnx.TensorProto):
        data = value.SerializeToString()
    else:
        data = numpy_helper.from_array(value, info.name).SerializeToString()
    with open(path, "wb") as f:
        f.write(data)


def main():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    for entry in os.listdir(HERE):
        if os.path.isdir(os.path.join(HERE, entry)):
            shutil.rmtree(os.path.join(HERE, entry))
    names = []
    skipped = []
    for case in sorted(cases, key=lambda c: c.name):
        ops = {n.op_type for n in case.model.graph.node}
        if not ops:
            continue
        if "_expanded" in case.name:
            if not ops <= NAMED:
                continue
        elif len(ops) != 1 or not ops <= NAMED:
            continue
        values = list(case.model.graph.input) + list(case.model.graph.output)
        if not all(v.type.HasField("tensor_type") for v in values):
            # Sequences and optionals: not tensors, which is all lopper has.
            skipped.append(case.name)
            continue
        out = os.path.join(HERE, case.name)
        os.makedirs(out)
        with open(os.path.join(out, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            d = os.path.join(out, f"test_data_set_{i}")
            os.makedirs(d)
            for j, v in enumerate(inputs):
                write_tensor(os.path.join(d, f"input_{j}.pb"), v, case.model.graph.input[j])
            for j, v in enumerate(outputs):
                write_tensor(os.path.join(d, f"output_{j}.pb"), v, case.model.graph.output[j])
        names.append(case.name)
    with open(os.path.join(HERE, "cases.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    with open(os.path.join(HERE, "skipped.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in skipped))
    print(f"{len(names)} cases, {len(skipped)} not tensors (onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
