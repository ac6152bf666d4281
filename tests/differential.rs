//! Every op over a range of shapes: symbolic batch 1, 3 and 64, odd sizes
//! (7, 300, 784), strides, padding, dilation and groups, broadcasting,
//! negative axes. Each model runs on the reference interpreter (the oracle),
//! the Cranelift JIT, the shared object `lopper compile` builds, and, when
//! small, the loop interpreter. Tolerance: 1e-4 relative, 1e-5 absolute (f32 with fma
//! against f64 sums).

mod common;

use lopper_backends::cranelift::compile_jit;
use std::collections::{BTreeMap, HashMap};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

/// (name, model body after `model m {`, batch sizes)
const CASES: &[(&str, &str, &[usize])] = &[
    ("linear_784x300", "input x: f32[b, 784]\n param w: f32[300, 784] = kaiming(seed = 1)\n param c: f32[300] = normal(0, 0.1, seed = 2)\n output y = relu(linear(x, w, c))", &[1, 3, 64]),
    ("linear_odd_3d", "input x: f32[b, 5, 7]\n param w: f32[3, 7] = normal(0, 0.5, seed = 3)\n output y = linear(x, w)", &[1, 3]),
    ("matmul_broadcast", "input x: f32[b, 2, 7, 5]\n param w: f32[5, 3] = normal(0, 0.5, seed = 4)\n output y = tanh(x @ w)", &[1, 3]),
    ("matmul_batched", "input x: f32[b, 4, 7]\n input z: f32[b, 7, 6]\n output y = x @ z", &[1, 3]),
    ("conv_stride_pad", "input x: f32[b, 3, 9, 9]\n param w: f32[4, 3, 3, 3] = kaiming(seed = 5)\n param c: f32[4] = ones()\n output y = conv2d(x, w, c, stride = 2, padding = 1)", &[1, 3]),
    ("conv_dilated_asym", "input x: f32[b, 2, 11, 7]\n param w: f32[5, 2, 3, 2] = kaiming(seed = 6)\n output y = relu(conv2d(x, w, dilation = [2, 3], padding = [0, 1, 2, 3]))", &[1, 2]),
    ("conv_depthwise", "input x: f32[b, 6, 7, 7]\n param w: f32[6, 1, 3, 3] = kaiming(seed = 7)\n output y = conv2d(x, w, groups = 6, padding = 1)", &[1, 3]),
    ("conv_1x1_large", "input x: f32[b, 16, 7, 7]\n param w: f32[32, 16, 1, 1] = kaiming(seed = 8)\n output y = sigmoid(conv2d(x, w))", &[1, 3]),
    ("pool_max_odd", "input x: f32[b, 3, 7, 7]\n output y = max_pool2d(x, kernel = 3, stride = 2)", &[1, 3]),
    ("pool_avg_padded", "input x: f32[b, 2, 5, 8]\n output y = avg_pool2d(x, kernel = [2, 3], stride = [1, 2], padding = 1)", &[1, 3]),
    ("global_pool", "input x: f32[b, 5, 7, 3]\n output y = flatten(global_avg_pool(x))", &[1, 3]),
    ("softmax_axes", "input x: f32[b, 7, 5]\n output y = softmax(x, axis = 1) + log_softmax(x, axis = -1)", &[1, 3]),
    ("layer_norm_last", "input x: f32[b, 300]\n param g: f32[300] = normal(1, 0.1, seed = 9)\n param c: f32[300] = normal(0, 0.1, seed = 10)\n output y = layer_norm(x, g, c)", &[1, 3]),
    ("layer_norm_plain", "input x: f32[b, 3, 7]\n output y = layer_norm(x, axis = 1)", &[1, 3]),
    ("batch_norm_2d", "input x: f32[b, 5]\n param s: f32[5] = uniform(0.5, 2, seed = 11)\n param c: f32[5] = zeros()\n param m: f32[5] = normal(0, 1, seed = 12)\n param v: f32[5] = uniform(0.5, 2, seed = 13)\n output y = batch_norm(x, s, c, m, v)", &[1, 3]),
    ("broadcast_arith", "input x: f32[b, 7, 1]\n input z: f32[1, 5]\n param k: f32[5] = uniform(1, 2, seed = 14)\n output y = (x - z) * 2 / k + exp(-x)", &[1, 3]),
    ("gelu_scalar_ops", "input x: f32[b, 7]\n output y = gelu(x * 3) - 0.5", &[1, 3]),
    ("reduce_keep", "input x: f32[b, 4, 7]\n output s = sum(x, axes = [1])\n output m = mean(x, axes = [0, 2], keepdims = true)\n output x2 = max(x, axis = -1, keepdims = true)", &[1, 3]),
    ("concat_slice", "input x: f32[b, 3, 5]\n input z: f32[b, 4, 5]\n let c = concat(x, z, axis = 1)\n output y = slice(c, axis = 1, start = 2, end = -1) * 2", &[1, 3]),
    ("transpose_reshape", "input x: f32[b, 3, 4, 5]\n let t = transpose(x, perm = [0, 3, 1, 2])\n output y = reshape(t, shape = [b, 5, -1]) + 1", &[1, 3]),
    ("identity_outputs", "input x: f32[b, 3]\n output a = x\n output c = relu(x)\n output d = x", &[1, 2]),
];

fn jit_and_loops(name: &str, body: &str, batches: &[usize]) {
    let source = format!("model m {{\n {body}\n}}\n");
    let graph =
        lopper_frontend::compile_source(&source, std::path::Path::new("")).unwrap_or_else(|d| {
            panic!(
                "{name}:\n{}",
                lopper_ir::diagnostic::render(name, &source, &d)
            )
        });
    let module = common::lowered(&graph);
    let jit = compile_jit(&module).unwrap_or_else(|e| panic!("{name}: {e}"));
    for &b in batches {
        let bound = BTreeMap::from([("b".to_string(), b)]);
        let mut inputs = HashMap::new();
        for (seed, &i) in graph.inputs.iter().enumerate() {
            let shape = graph.node(i).ty.shape.bind(&bound).unwrap();
            inputs.insert(
                graph.node(i).name.clone(),
                lopper_runtime::random_tensor(shape, 100 * b as u64 + seed as u64),
            );
        }
        let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
        let sizes: BTreeMap<String, usize> = module.sizes.iter().map(|s| (s.clone(), b)).collect();
        let got = jit.run(&inputs, &sizes).unwrap();
        for ((out, a), (_, e)) in got.iter().zip(&want) {
            common::assert_close(&format!("{name} b={b} {out} (cranelift)"), a, e, RTOL, ATOL);
        }
        let work: usize = want.iter().map(|(_, t)| t.numel()).sum::<usize>() * 1000;
        if work < 2_000_000 || b == 1 {
            let got = lopper_runtime::run_module(&module, &inputs, &BTreeMap::new()).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(
                    &format!("{name} b={b} {out} (loop interpreter)"),
                    a,
                    e,
                    RTOL,
                    ATOL,
                );
            }
        }
    }
}

#[test]
fn every_op_over_shapes_matches_the_interpreter() {
    for (name, body, batches) in CASES {
        jit_and_loops(name, body, batches);
    }
}

/// The same models as shared objects built by `lopper compile`, loaded and
/// called the way `lopper run lib.so` does, at batch 1 and 3.
#[test]
fn shared_objects_match_the_interpreter() {
    let dir = common::scratch("differential-so");
    for (name, body, _) in CASES {
        let model = dir.join(format!("{name}.lop"));
        std::fs::write(&model, format!("model m {{\n {body}\n}}\n")).unwrap();
        let lib = dir.join(format!("lib{name}.so"));
        let (code, _, err) = common::lopper(
            &dir,
            &[
                "compile",
                model.to_str().unwrap(),
                "-o",
                lib.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{name}: {err}");
        let shared = lopper_runtime::SharedModel::open(&lib).unwrap();
        let graph = lopper_frontend::load_model(&model).unwrap();
        for b in [1usize, 3] {
            let bound = BTreeMap::from([("b".to_string(), b)]);
            let mut inputs = HashMap::new();
            for (seed, &i) in graph.inputs.iter().enumerate() {
                let shape = graph.node(i).ty.shape.bind(&bound).unwrap();
                inputs.insert(
                    graph.node(i).name.clone(),
                    lopper_runtime::random_tensor(shape, seed as u64 + 7),
                );
            }
            let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
            let got = shared.run(&inputs, &BTreeMap::new()).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(&format!("{name} b={b} {out} (.so)"), a, e, RTOL, ATOL);
            }
        }
    }
}
