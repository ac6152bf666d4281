#!/usr/bin/env python3
"""lopper against ONNX Runtime (and NumPy) on the same ONNX files, in one process.

Each model of ../shared/peers/models is compiled by `lopper compile` (the
backend given) to a shared object, loaded with ctypes, and run next to an
ONNX Runtime session (one thread, every graph optimization, I/O binding:
the cheapest way to call ORT). The two are interleaved round by round, so
both see the same machine; each round times single calls of each. For the
GEMM and matvec models (`Y = X @ W`), NumPy's `X @ W` (OpenBLAS, one
thread when OPENBLAS_NUM_THREADS=1) runs in the same rounds. Outputs are
checked to agree before timing.

Prints, per model, the median of every call of each (µs), ORT's median over
lopper's (> 1: lopper is faster), NumPy's over lopper's for the GEMMs, and
ORT's ratio in every round (a spread that shows how much the shared
machine moved).

Usage (from the repository root, the peers' venv as in ../shared/peers):
  cargo build --release --features llvm
  OPENBLAS_NUM_THREADS=1 taskset -c 0 /tmp/peers-venv/bin/python benches/vs_ort.py --backend llvm
Options: --backend cranelift|llvm, --models mlp_b1,lenet5_b64, --rounds N,
--lopper PATH (default target/release/lopper).
"""

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "..", "shared", "peers", "models")
ALL = ["mlp_b1", "mlp_b64", "lenet5_b1", "lenet5_b64", "transformer_b1",
       "matvec_784x300", "gemm_256", "gemm_512", "gemm_1024"]


def compile_model(lopper, backend, name, out_dir):
    lib = os.path.join(out_dir, f"lib{name}_{backend}.so")
    subprocess.run(
        [lopper, "compile", os.path.join(MODELS, name + ".onnx"),
         "--backend", backend, "-o", lib],
        check=True, stdout=subprocess.DEVNULL)
    return lib


def lopper_runner(lib_path, prefix, x):
    """A no-argument callable running the library on `x`, and its output."""
    lib = ctypes.CDLL(lib_path)
    # `const char NAME_signature[]`: an array, read from its address.
    start = ctypes.addressof(ctypes.c_char.in_dll(lib, f"{prefix}_signature"))
    signature = ctypes.string_at(start).decode()
    buffers, sizes = [], []
    for line in signature.splitlines():
        kind, name, *rest = line.split()
        if kind == "size":
            raise SystemExit(f"{prefix}: symbolic size {name}; use a fixed-shape model")
        shape = [int(d) for d in rest[0][rest[0].index("[") + 1:-1].split(",")]
        if kind == "in":
            buffers.append(np.ascontiguousarray(x.reshape(shape)))
        else:
            buffers.append(np.zeros(shape, dtype=np.float32))
    pointers = (ctypes.c_void_p * len(buffers))(
        *[b.ctypes.data_as(ctypes.c_void_p) for b in buffers])
    size_array = (ctypes.c_int64 * max(len(sizes), 1))()
    run = getattr(lib, f"{prefix}_run_packed")
    run.restype = ctypes.c_int

    def call():
        if run(pointers, size_array) != 0:
            raise SystemExit(f"{prefix}_run_packed failed")
    call()
    return call, buffers[-1]


def ort_runner(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    y = sess.run(None, {inp: x})[0]
    io = sess.io_binding()
    xo = ort.OrtValue.ortvalue_from_numpy(x)
    yo = ort.OrtValue.ortvalue_from_numpy(np.empty_like(y))
    io.bind_ortvalue_input(inp, xo)
    io.bind_ortvalue_output(out, yo)
    return (lambda: sess.run_with_iobinding(io)), y


def numpy_runner(model, x):
    """`X @ W` with the model's one matrix initializer, or None."""
    from onnx import numpy_helper
    if [n.op_type for n in model.graph.node] != ["MatMul"]:
        return None, None
    w = numpy_helper.to_array(model.graph.initializer[0])
    out = np.empty((x.shape[0], w.shape[1]), dtype=np.float32)
    return (lambda: np.matmul(x, w, out=out)), out


def time_calls(fn, seconds):
    samples = []
    pc = time.perf_counter_ns
    end = time.perf_counter() + seconds
    while len(samples) < 5 or time.perf_counter() < end:
        t0 = pc()
        fn()
        samples.append(pc() - t0)
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="llvm", choices=["cranelift", "llvm"])
    ap.add_argument("--models", default=",".join(ALL))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=0.3, help="per engine per round")
    ap.add_argument("--lopper", default=os.path.join(ROOT, "target", "release", "lopper"))
    args = ap.parse_args()
    ort.set_default_logger_severity(3)
    out_dir = "/tmp/lopper-vs-ort"
    os.makedirs(out_dir, exist_ok=True)
    print(f"lopper ({args.backend}) against ONNX Runtime {ort.__version__} (I/O binding), "
          f"one thread, {args.rounds} interleaved rounds")
    print(f"{'model':16s} {'lopper µs':>10s} {'ORT µs':>10s} {'ORT/lopper':>10s} "
          f"{'NumPy µs':>10s} {'NumPy/lopper':>12s}  ORT/lopper per round")
    for name in args.models.split(","):
        path = os.path.join(MODELS, name + ".onnx")
        model = onnx.load(path)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(42).standard_normal(shape).astype(np.float32)
        lib = compile_model(args.lopper, args.backend, name, out_dir)
        ours, y_ours = lopper_runner(lib, f"{name}_{args.backend}", x)
        theirs, y_theirs = ort_runner(path, x)
        y_ours = y_ours.reshape(y_theirs.shape)
        err = float(np.max(np.abs(y_ours - y_theirs)) / (1e-6 + np.max(np.abs(y_theirs))))
        if err > 1e-4:
            raise SystemExit(f"{name}: lopper and ORT disagree (relative error {err:.2e})")
        blas, y_blas = numpy_runner(model, x)
        if blas is not None:
            blas()
            if np.max(np.abs(y_blas - y_theirs)) > 1e-4 * (1e-6 + np.max(np.abs(y_theirs))):
                raise SystemExit(f"{name}: NumPy and ORT disagree")
        engines = [ours, theirs] + ([blas] if blas else [])
        for fn in engines:
            time_calls(fn, 0.2)
        samples = [[] for _ in engines]
        ratios = []
        for _ in range(args.rounds):
            medians = []
            for fn, all_samples in zip(engines, samples):
                got = time_calls(fn, args.seconds)
                all_samples += got
                medians.append(statistics.median(got))
            ratios.append(medians[1] / medians[0])
        mo, mt = (statistics.median(samples[i]) / 1e3 for i in (0, 1))
        spread = " ".join(f"{r:.2f}" for r in ratios)
        numpy_text = f"{'':10s} {'':12s}"
        if blas:
            mn = statistics.median(samples[2]) / 1e3
            numpy_text = f"{mn:10.1f} {mn / mo:12.2f}"
        print(f"{name:16s} {mo:10.1f} {mt:10.1f} {mt / mo:10.2f} {numpy_text}  {spread}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
