//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lopper_ir::graph::weights::RawTensor;
use lopper_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The small one-op models of `tests/data/ops/` (with ONNX Runtime's outputs
/// beside them), covering every op the examples do not use.
pub const OP_CASES: &[&str] = &[
    "conv_groups",
    "pools",
    "batch_norm",
    "elementwise",
    "reductions",
    "concat_gelu",
    "layer_norm_matmul",
];

/// Every op over a range of shapes: (name, model body after `model m {`,
/// batch sizes for the symbolic `b`).
pub const SHAPE_CASES: &[(&str, &str, &[usize])] = &[
    ("linear_784x300", "input x: f32[b, 784]\n param w: f32[300, 784] = kaiming(seed = 1)\n param c: f32[300] = normal(0, 0.1, seed = 2)\n output y = relu(linear(x, w, c))", &[1, 3, 64]),
    ("linear_odd_3d", "input x: f32[b, 5, 7]\n param w: f32[3, 7] = normal(0, 0.5, seed = 3)\n output y = linear(x, w)", &[1, 3]),
    ("matvec_const_row", "input x: f32[1, 37]\n param w: f32[21, 37] = kaiming(seed = 4)\n param c: f32[21] = normal(0, 0.1, seed = 5)\n output y = relu(linear(x, w, c))", &[1]),
    ("gemm_const_rows", "input x: f32[5, 37]\n param w: f32[37, 21] = kaiming(seed = 6)\n output y = tanh(x @ w)", &[1]),
    ("matmul_broadcast", "input x: f32[b, 2, 7, 5]\n param w: f32[5, 3] = normal(0, 0.5, seed = 4)\n output y = tanh(x @ w)", &[1, 3]),
    ("matmul_batched", "input x: f32[b, 4, 7]\n input z: f32[b, 7, 6]\n output y = x @ z", &[1, 3]),
    ("conv_stride_pad", "input x: f32[b, 3, 9, 9]\n param w: f32[4, 3, 3, 3] = kaiming(seed = 5)\n param c: f32[4] = ones()\n output y = conv2d(x, w, c, stride = 2, padding = 1)", &[1, 3]),
    ("conv_dilated_asym", "input x: f32[b, 2, 11, 7]\n param w: f32[5, 2, 3, 2] = kaiming(seed = 6)\n output y = relu(conv2d(x, w, dilation = [2, 3], padding = [0, 1, 2, 3]))", &[1, 2]),
    ("conv_depthwise", "input x: f32[b, 6, 7, 7]\n param w: f32[6, 1, 3, 3] = kaiming(seed = 7)\n output y = conv2d(x, w, groups = 6, padding = 1)", &[1, 3]),
    ("conv_channels_last", "input x: f32[b, 6, 9, 7]\n input z: f32[b, 20, 9, 7]\n param w: f32[20, 6, 3, 3] = kaiming(seed = 9)\n param s: f32[20, 1, 1] = normal(0, 0.5, seed = 10)\n output y = relu(conv2d(x, w, padding = 1) + s + z)", &[1, 3]),
    ("conv_channels_last_pools", "input x: f32[b, 6, 9, 7]\n param w: f32[20, 6, 3, 3] = kaiming(seed = 11)\n param v: f32[16, 6, 3, 3] = kaiming(seed = 12)\n let p = max_pool2d(max_pool2d(relu(conv2d(x, w, padding = 1)), kernel = 3, stride = 2, padding = 1), kernel = 2)\n output y = relu(p)\n output z = avg_pool2d(conv2d(x, v), kernel = [2, 3], stride = [1, 2], padding = 1)", &[1, 3]),
    ("conv_1x1_large", "input x: f32[b, 16, 7, 7]\n param w: f32[32, 16, 1, 1] = kaiming(seed = 8)\n output y = sigmoid(conv2d(x, w))", &[1, 3]),
    ("pool_max_odd", "input x: f32[b, 3, 7, 7]\n output y = max_pool2d(x, kernel = 3, stride = 2)", &[1, 3]),
    ("pool_max_stride2_odd", "input x: f32[b, 3, 6, 19]\n output y = max_pool2d(x, kernel = 2, stride = 2)", &[1, 3]),
    ("pool_max_3s2_wide", "input x: f32[b, 2, 7, 21]\n output y = max_pool2d(x, kernel = 3, stride = 2)", &[1, 3]),
    ("pool_avg_stride2", "input x: f32[b, 2, 4, 16]\n output y = avg_pool2d(x, kernel = 2, stride = 2)", &[1, 3]),
    ("pool_avg_padded", "input x: f32[b, 2, 5, 8]\n output y = avg_pool2d(x, kernel = [2, 3], stride = [1, 2], padding = 1)", &[1, 3]),
    ("global_pool", "input x: f32[b, 5, 7, 3]\n output y = flatten(global_avg_pool(x))", &[1, 3]),
    ("softmax_axes", "input x: f32[b, 7, 5]\n output y = softmax(x, axis = 1) + log_softmax(x, axis = -1)", &[1, 3]),
    ("softmax_wide", "input x: f32[b, 3, 37]\n output y = softmax(x, axis = -1)\n output m = max(x, axis = -1)\n output s = mean(x, axes = [2])", &[1, 3]),
    ("layer_norm_last", "input x: f32[b, 300]\n param g: f32[300] = normal(1, 0.1, seed = 9)\n param c: f32[300] = normal(0, 0.1, seed = 10)\n output y = layer_norm(x, g, c)", &[1, 3]),
    ("layer_norm_plain", "input x: f32[b, 3, 7]\n output y = layer_norm(x, axis = 1)", &[1, 3]),
    ("batch_norm_2d", "input x: f32[b, 5]\n param s: f32[5] = uniform(0.5, 2, seed = 11)\n param c: f32[5] = zeros()\n param m: f32[5] = normal(0, 1, seed = 12)\n param v: f32[5] = uniform(0.5, 2, seed = 13)\n output y = batch_norm(x, s, c, m, v)", &[1, 3]),
    ("broadcast_arith", "input x: f32[b, 7, 1]\n input z: f32[1, 5]\n param k: f32[5] = uniform(1, 2, seed = 14)\n output y = (x - z) * 2 / k + exp(-x)", &[1, 3]),
    ("gelu_scalar_ops", "input x: f32[b, 7]\n output y = gelu(x * 3) - 0.5", &[1, 3]),
    ("pow_erf_sqrt", "input x: f32[b, 7]\n input z: f32[b, 7]\n output y = pow(x, exponent = 3) + pow(x * x + 1, exponent = -0.5) + pow(x * x, exponent = 1.3) + sqrt(x * x) + erf(x * 2)\n output p = pow(x * x + 0.5, z * 3) + pow(x, z * 0 + 3) - pow(x, z * 0 - 2)", &[1, 3]),
    ("pool_dilated", "input x: f32[b, 2, 9, 8]\n output y = max_pool2d(x, kernel = 3, stride = [2, 1], dilation = [2, 3], padding = [1, 2, 2, 1]) + avg_pool2d(x, kernel = 3, stride = [2, 1], dilation = [2, 3], padding = [1, 2, 2, 1])", &[1, 3]),
    ("reduce_keep", "input x: f32[b, 4, 7]\n output s = sum(x, axes = [1])\n output m = mean(x, axes = [0, 2], keepdims = true)\n output x2 = max(x, axis = -1, keepdims = true)", &[1, 3]),
    ("concat_slice", "input x: f32[b, 3, 5]\n input z: f32[b, 4, 5]\n let c = concat(x, z, axis = 1)\n output y = slice(c, axis = 1, start = 2, end = -1) * 2", &[1, 3]),
    ("transpose_reshape", "input x: f32[b, 3, 4, 5]\n let t = transpose(x, perm = [0, 3, 1, 2])\n output y = reshape(t, shape = [b, 5, -1]) + 1", &[1, 3]),
    ("identity_outputs", "input x: f32[b, 3]\n output a = x\n output c = relu(x)\n output d = x", &[1, 2]),
];

/// The repository root (integration tests run there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads a `.lop` model given relative to the root, failing with its diagnostics.
pub fn load(relative: &str) -> Graph {
    lopper_frontend::load_model(Path::new(relative)).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Reads one tensor of a safetensors file.
pub fn read(path: &str, name: &str) -> RawTensor {
    lopper_runtime::read_tensor_file(&root().join(path), Some(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A raw tensor as an f32 tensor.
pub fn tensor(raw: RawTensor) -> Tensor {
    Tensor {
        shape: raw.shape,
        data: raw.values,
    }
}

/// Asserts `|actual - expected| <= atol + rtol·|expected|` everywhere and equal shapes.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, rtol: f32, atol: f32) {
    assert_eq!(actual.shape, expected.shape, "{what}: shapes differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &e)) in actual.data.iter().zip(&expected.data).enumerate() {
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        if excess > worst.0 || !a.is_finite() {
            worst = (excess.max(f32::MIN_POSITIVE), i);
        }
    }
    assert!(
        worst.0 <= 0.0,
        "{what}: element {} is {} but expected {} (rtol {rtol}, atol {atol})",
        worst.1,
        actual.data[worst.1],
        expected.data[worst.1]
    );
}

/// Runs the lopper binary in `dir`; returns exit code, stdout and stderr.
pub fn lopper(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the lopper binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names of the files in `dir`, sorted.
pub fn sorted_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lopper-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Runs `pipeline` on `ir` with the verifier after every pass.
pub fn run_pipeline(mut ir: lopper_passes::Ir, pipeline: &str) -> lopper_passes::Ir {
    let instrumentation = lopper_passes::Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    lopper_passes::PassManager::new(pipeline, instrumentation)
        .unwrap()
        .run_ir(&mut ir, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    ir
}

/// `g` after the default graph pipeline.
pub fn optimized(g: &Graph) -> Graph {
    match run_pipeline(
        lopper_passes::Ir::Graph(g.clone()),
        lopper_passes::DEFAULT_PIPELINE,
    ) {
        lopper_passes::Ir::Graph(g) => g,
        lopper_passes::Ir::Loops(_) => unreachable!("the default pipeline does not lower"),
    }
}

/// `g` as the code generators get it: the default pipeline, lowering and
/// memory planning.
pub fn lowered(g: &Graph) -> lopper_ir::loops::Module {
    let pipeline = format!(
        "{},lower-to-loops,plan-memory",
        lopper_passes::DEFAULT_PIPELINE
    );
    match run_pipeline(lopper_passes::Ir::Graph(g.clone()), &pipeline) {
        lopper_passes::Ir::Loops(m) => m,
        lopper_passes::Ir::Graph(_) => unreachable!("the pipeline lowers"),
    }
}

/// `g` compiled at optimization level `level`: its graph pipeline, then
/// its loop pipeline (what `lopper compile -O<level>` runs).
pub fn compiled_at(g: &Graph, level: u8) -> lopper_ir::loops::Module {
    let pipeline = format!(
        "{},{}",
        lopper_passes::graph_pipeline(level),
        lopper_passes::loop_pipeline(level)
    );
    match run_pipeline(lopper_passes::Ir::Graph(g.clone()), &pipeline) {
        lopper_passes::Ir::Loops(m) => m,
        lopper_passes::Ir::Graph(_) => unreachable!("the pipeline lowers"),
    }
}

/// Builds `examples/c/digits.c` against `libdigits_mlp.so` in `dir`.
pub fn build_c_client(dir: &Path) -> PathBuf {
    let client = dir.join("digits");
    let status = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-Wall", "-Werror", "-I"])
        .arg(dir)
        .arg(root().join("examples/c/digits.c"))
        .arg("-L")
        .arg(dir)
        .args([
            "-ldigits_mlp",
            &format!("-Wl,-rpath,{}", dir.display()),
            "-o",
        ])
        .arg(&client)
        .status()
        .unwrap();
    assert!(status.success());
    client
}

/// Seeded random inputs for `g` with the symbolic size `size` bound to `b`;
/// `salt` varies the data between tests.
#[allow(dead_code)]
pub fn random_inputs(
    g: &Graph,
    size: &str,
    b: usize,
    salt: u64,
) -> std::collections::HashMap<String, lopper_ir::Tensor> {
    let bound = std::collections::BTreeMap::from([(size.to_string(), b)]);
    g.inputs
        .iter()
        .enumerate()
        .map(|(seed, &i)| {
            let shape = g
                .node(i)
                .ty
                .shape
                .bind(&bound)
                .expect("every size is bound");
            (
                g.node(i).name.clone(),
                lopper_runtime::random_tensor(shape, salt * b as u64 + seed as u64),
            )
        })
        .collect()
}

/// Case `number` (from 0) of the `// -----`-separated loop-IR filetest
/// `relative`, parsed.
pub fn lir_case(relative: &str, number: usize) -> lopper_ir::loops::Module {
    let text = std::fs::read_to_string(root().join(relative)).unwrap();
    let case = text.split("\n// -----\n").nth(number).unwrap();
    lopper_ir::loops::parse_lir(case).unwrap_or_else(|d| panic!("{relative}: {d:?}"))
}

/// What the `permute` cases of `tests/filetests/verify-loops/permute.lir`
/// compute, by plain loops over their data: `y[i, l] = sum over q of
/// w[q, l] * x[i, order(q, l)]` (`w` all ones when the module has none).
pub fn permute_reference(module: &lopper_ir::loops::Module, x: &Tensor) -> Tensor {
    let lanes = x.shape[1];
    let order = module.buffer("order").unwrap().index_data.clone().unwrap();
    let start: Vec<usize> = match module.buffer("start") {
        Some(b) => b
            .index_data
            .as_ref()
            .unwrap()
            .iter()
            .map(|&s| s as usize)
            .collect(),
        None => (0..order.len() / lanes).map(|q| q * lanes).collect(),
    };
    let w = module
        .buffer("w")
        .map(|b| b.data.as_ref().unwrap().data.data.clone());
    let mut y = vec![0.0f32; x.data.len()];
    for i in 0..x.shape[0] {
        for (q, &s) in start.iter().enumerate() {
            for l in 0..lanes {
                let weight = w.as_ref().map_or(1.0, |w| w[q * lanes + l]);
                y[i * lanes + l] += weight * x.data[i * lanes + order[s + l] as usize];
            }
        }
    }
    Tensor::new(x.shape.clone(), y).unwrap()
}
