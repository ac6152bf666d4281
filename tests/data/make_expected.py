#!/usr/bin/env python3
"""Expected outputs for lopper's interpreter, computed by ONNX Runtime.

Nothing here is computed by lopper. Run from the repository root with
onnxruntime, onnx, numpy and safetensors installed:

    python3 -m venv /tmp/ort && /tmp/ort/bin/pip install onnxruntime onnx numpy safetensors
    /tmp/ort/bin/python tests/data/make_expected.py

Writes
  tests/data/ort/<model>.safetensors   {input, output} for the peer models in
                                       ../shared/peers/models (examples/*.lop mirror them)
  tests/data/ort/onnx/<model>.safetensors  for every other peer model: {seed, output} or
                                       {seed, output_sample, stride}: the input is lopper's
                                       `random_tensor(shape, seed)` (SplitMix64, below), and a
                                       large output is kept as every `stride`-th element
  tests/data/onnx/symbolic.onnx        a conv net with a symbolic batch (`batch`, and `N` / unknown
                                       dims on a second input), a Shape-Gather-Concat-Reshape
                                       chain and a Gemm; symbolic.safetensors: inputs and ORT's
                                       outputs at batch 1 and 5
  tests/data/onnx/external.onnx        a Gemm whose weights live in external.onnx.data
                                       (ONNX external data); external.safetensors: input, output
  tests/data/ops/<case>.safetensors    inputs, params and ORT's output for small
                                       one-op graphs built here with onnx.helper;
                                       tests/data/ops/<case>.lop is the same graph in lopper's DSL,
                                       tests/data/ops/<case>.onnx the graph itself
Inputs are drawn from numpy's default_rng with fixed seeds, or from SplitMix64.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "..", "shared", "peers", "models")
HERE = os.path.dirname(os.path.abspath(__file__))


def run(model_bytes, feeds):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # No graph rewrites: the reference is the plain ONNX semantics.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def peer_models():
    cases = {"mlp_b64": (64, 784), "lenet5_b1": (1, 1, 28, 28), "lenet5_b64": (64, 1, 28, 28),
             "transformer_b1": (1, 64, 128)}
    for seed, (name, shape) in enumerate(sorted(cases.items())):
        rng = np.random.default_rng(100 + seed)
        x = rng.uniform(-1, 1, size=shape).astype(np.float32)
        with open(os.path.join(PEERS, name + ".onnx"), "rb") as f:
            (y,) = run(f.read(), {"input": x})
        save_file({"input": x, "output": y}, os.path.join(HERE, "ort", name + ".safetensors"))
        print(name, y.shape)


def splitmix_uniform(n, seed):
    """lopper_runtime::random_tensor: SplitMix64, 53-bit unit, scaled to [-1, 1)."""
    mask = (1 << 64) - 1
    state = seed
    out = np.empty(n, np.float32)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out[i] = np.float32((z >> 11) / float(1 << 53) * 2.0 - 1.0)
    return out


def other_peer_models():
    """The peer models the DSL examples do not mirror, for the ONNX importer's tests."""
    os.makedirs(os.path.join(HERE, "ort", "onnx"), exist_ok=True)
    names = ["gemm_256", "gemm_512", "gemm_1024", "matvec_784x300", "mlp_b1", "null_b1"]
    for seed, name in enumerate(names):
        path = os.path.join(PEERS, name + ".onnx")
        model = onnx.load(path)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = splitmix_uniform(int(np.prod(shape)), 500 + seed).reshape(shape)
        with open(path, "rb") as f:
            (y,) = run(f.read(), {"input": x})
        tensors = {"seed": np.array([500 + seed], np.float32)}
        if y.size <= 65536:
            tensors["output"] = y
        else:
            stride = y.size // 4096 + 1
            tensors["output_sample"] = np.ascontiguousarray(y.reshape(-1)[::stride])
            tensors["stride"] = np.array([stride], np.float32)
        save_file(tensors, os.path.join(HERE, "ort", "onnx", name + ".safetensors"))
        print(name, y.shape)


def onnx_models():
    """Models that exercise the ONNX importer beyond the peers: symbolic dims, external data."""
    out = os.path.join(HERE, "onnx")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(11)
    u = lambda *s: rng.uniform(-1, 1, size=s).astype(np.float32)
    n = helper.make_node
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [numpy_helper.from_array(u(4, 3, 3, 3), "conv.weight"),
             numpy_helper.from_array(u(4), "conv.bias"),
             numpy_helper.from_array(u(10, 36), "fc.weight"),
             numpy_helper.from_array(u(10), "fc.bias"),
             i64("zero", [0]), i64("minus_one", [-1])]
    nodes = [
        n("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["c"], ["r"]),
        n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[1, 1], ceil_mode=1),
        n("Shape", ["p"], ["s"]),
        n("Gather", ["s", "zero"], ["b"], axis=0),
        n("Concat", ["b", "minus_one"], ["target"], axis=0),
        n("Reshape", ["p", "target"], ["flat"]),
        n("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["probs"], axis=-1),
        n("ReduceMean", ["z", "axes"], ["zm"], keepdims=0),
        n("Unsqueeze", ["zm", "axes"], ["zu"]),
        n("Sub", ["z", "zu"], ["centered"]),
        n("Pow", ["centered", "two"], ["sq"]),
        n("Sqrt", ["sq"], ["dev"]),
    ]
    inits += [i64("axes", [1]), numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(
        nodes, "symbolic",
        [vi("x", ["batch", 3, 8, 8]), vi("z", ["N", None])],
        [vi("probs", ["batch", 10]), vi("dev", ["N", None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "symbolic.onnx"))
    tensors = {}
    for b in (1, 5):
        x, z = u(b, 3, 8, 8), u(b + 2, 6)
        probs, dev = run(model.SerializeToString(), {"x": x, "z": z})
        tensors.update({f"x_{b}": x, f"z_{b}": z, f"probs_{b}": probs, f"dev_{b}": dev})
    save_file(tensors, os.path.join(out, "symbolic.safetensors"))
    print("symbolic", list(tensors))

    graph = helper.make_graph(
        [n("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)], "external",
        [vi("x", [2, 16])], [vi("y", [2, 8])],
        [numpy_helper.from_array(u(8, 16), "w"), numpy_helper.from_array(u(8), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = os.path.join(out, "external.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.onnx.data", size_threshold=0)
    x = u(2, 16)
    (y,) = run(path, {"x": x})
    save_file({"x": x, "y": y}, os.path.join(out, "external.safetensors"))
    print("external", y.shape)


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def op_case(name, nodes, inputs, params, extra_inits=()):
    """One small graph: `inputs` and `params` are dicts of numpy arrays."""
    inits = [numpy_helper.from_array(v, k) for k, v in params.items()] + list(extra_inits)
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, name, [vi(k, v.shape) for k, v in inputs.items()],
                              [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # No checker: the output shape is left for ORT to infer; ORT validates the graph.
    (y,) = run(model.SerializeToString(), inputs)
    onnx.save(model, os.path.join(HERE, "ops", name + ".onnx"))
    tensors = dict(inputs)
    tensors.update(params)
    tensors["expected"] = y
    save_file(tensors, os.path.join(HERE, "ops", name + ".safetensors"))
    print(name, y.shape)


def ops():
    rng = np.random.default_rng(7)
    u = lambda *s: rng.uniform(-1, 1, size=s).astype(np.float32)
    n = helper.make_node
    op_case("conv_groups", [n("Conv", ["x", "w", "b"], ["output"], group=2, strides=[2, 1],
                              dilations=[2, 1], pads=[1, 0, 2, 1])],
            {"x": u(2, 4, 9, 8)}, {"w": u(6, 2, 3, 3), "b": u(6)})
    op_case("pools", [n("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                      n("AveragePool", ["x"], ["a"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]),
                      n("GlobalAveragePool", ["x"], ["g"]),
                      n("Add", ["m", "a"], ["s"]),
                      n("Add", ["s", "g"], ["output"])],
            {"x": u(2, 3, 7, 7)}, {})
    var = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    op_case("batch_norm", [n("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["output"],
                             epsilon=1e-3)],
            {"x": u(2, 3, 4, 5)}, {"scale": u(3), "bias": u(3), "mean": u(3), "var": var})
    op_case("elementwise", [n("Sigmoid", ["x"], ["s"]), n("Tanh", ["y"], ["t"]),
                            n("Sub", ["s", "t"], ["d"]), n("Exp", ["d"], ["e"]),
                            n("Div", ["e", "c"], ["q"]), n("LogSoftmax", ["q"], ["output"], axis=1)],
            {"x": u(2, 3, 5), "y": u(3, 1)}, {"c": rng.uniform(1, 2, size=5).astype(np.float32)})
    op_case("reductions", [n("ReduceSum", ["x", "axes1"], ["s"], keepdims=1),
                           n("ReduceMean", ["x"], ["m"], axes=[0, 2], keepdims=1),
                           n("ReduceMax", ["x"], ["mx"], axes=[1], keepdims=1),
                           n("Mul", ["s", "m"], ["sm"]), n("Add", ["sm", "mx"], ["output"])],
            {"x": u(3, 4, 5)}, {},
            [numpy_helper.from_array(np.array([1], np.int64), "axes1")])
    op_case("concat_gelu", [n("Concat", ["x", "y"], ["c"], axis=1),
                            n("Mul", ["c", "inv_sqrt2"], ["g0"]), n("Erf", ["g0"], ["g1"]),
                            n("Add", ["g1", "one"], ["g2"]), n("Mul", ["c", "g2"], ["g3"]),
                            n("Mul", ["g3", "half"], ["output"])],
            {"x": u(2, 3, 4), "y": u(2, 5, 4)}, {},
            [numpy_helper.from_array(np.array(1 / np.sqrt(2), np.float32), "inv_sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    op_case("layer_norm_matmul", [n("LayerNormalization", ["x", "g", "b"], ["l"], axis=-2, epsilon=1e-5),
                                  n("MatMul", ["l", "w"], ["output"])],
            {"x": u(2, 3, 4, 6)}, {"g": u(4, 6), "b": u(4, 6), "w": u(3, 6, 5)})


if __name__ == "__main__":
    peer_models()
    other_peer_models()
    onnx_models()
    ops()
