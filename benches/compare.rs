//! lopper's compiled code against a reference, in one run.
//!
//! `cargo bench --bench compare` times, single-threaded and interleaved
//! round by round so that a noisy neighbour hits both alike: GEMM
//! 256/512/1024 and matvec 784x300 (`Y = A @ W`, `W` a constant, as in
//! `../shared/peers`) against the `matrixmultiply` crate's `sgemm` on the
//! same matrices; and mlp batch 1 and 64, lenet5 batch 1 and 64, and
//! transformer batch 1 on their own. It prints medians, GFLOP/s and the
//! ratio. `-O` levels: set `LOPPER_OPT=0..3` (default 2); the LLVM backend:
//! `LOPPER_BACKEND=llvm cargo bench --features llvm --bench compare`. Not
//! part of `cargo test`.

use lopper_ir::loops::{kernel_cost, BufferKind, Module};
use lopper_passes::{graph_pipeline, loop_pipeline_for, Instrumentation, Ir, PassManager};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

fn level() -> u8 {
    std::env::var("LOPPER_OPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn llvm() -> bool {
    std::env::var("LOPPER_BACKEND").is_ok_and(|b| b == "llvm")
}

fn lanes() -> u32 {
    if llvm() {
        lopper_backends::Backend::Llvm.lanes()
    } else {
        4
    }
}

/// The code generator chosen by `LOPPER_BACKEND`.
fn codegen(m: &Module) -> lopper_backends::cranelift::JitModule {
    #[cfg(feature = "llvm")]
    if llvm() {
        return lopper_backends::llvm::compile_jit(m, 3).expect("codegen");
    }
    assert!(
        !llvm(),
        "build with --features llvm for LOPPER_BACKEND=llvm"
    );
    lopper_backends::cranelift::compile_jit(m).expect("codegen")
}

fn compile(graph: lopper_ir::Graph) -> Module {
    let pipeline = format!(
        "{},{}",
        graph_pipeline(level()),
        loop_pipeline_for(level(), lanes())
    );
    let mut pm = PassManager::new(&pipeline, Instrumentation::default()).expect("pipeline");
    let mut ir = Ir::Graph(graph);
    pm.run_ir(&mut ir, &mut std::io::sink()).expect("passes");
    match ir {
        Ir::Loops(m) => m,
        Ir::Graph(_) => panic!("not lowered"),
    }
}

/// Median of single-call times after warm-up, in seconds.
fn median_time(calls: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..calls)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn calls_for(seconds_per_call: f64) -> usize {
    ((0.3 / seconds_per_call.max(1e-7)) as usize).clamp(5, 20_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gemm(m: usize, k: usize, n: usize, rounds: usize) {
    let source = format!(
        "model gemm {{\n  input a: f32[{m}, {k}]\n  param w: f32[{k}, {n}] = normal(seed = 3)\n  output y = matmul(a, w)\n}}\n"
    );
    let graph = lopper_frontend::compile_source(&source, Path::new("")).expect("model");
    let module = compile(graph);
    let jit = codegen(&module);
    let a = lopper_runtime::random_tensor(vec![m, k], 1);
    // matrixmultiply gets the weights in their original layout, from the
    // same seeded initializer.
    let w_plain = lopper_ir::graph::param::Initializer::from_args(
        "normal",
        &[("seed".to_string(), lopper_ir::graph::op::AttrValue::Int(3))],
    )
    .expect("initializer")
    .generate(&[k, n])
    .expect("a small matrix");
    let inputs = HashMap::from([("a".to_string(), a.clone())]);
    let mut bound = jit.bind(&inputs, &BTreeMap::new()).expect("bind");
    let mut c = vec![0.0f32; m * n];
    let reference = |c: &mut [f32]| unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            k as isize,
            1,
            w_plain.data.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
    // Same answer first.
    bound.execute();
    reference(&mut c);
    let out = bound.outputs();
    let worst = out[0]
        .1
        .data
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-3,
        "lopper and matrixmultiply disagree by {worst}"
    );
    let probe = median_time(3, || bound.execute());
    let calls = calls_for(probe);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(median_time(calls, || bound.execute()));
        theirs.push(median_time(calls, || reference(&mut c)));
    }
    let flops = 2.0 * (m * k * n) as f64;
    let (o, t) = (median(ours), median(theirs));
    println!(
        "{:<22} lopper {:>10.1} µs {:>7.2} GFLOP/s | matrixmultiply {:>10.1} µs {:>7.2} GFLOP/s | ratio {:.2}",
        format!("gemm {m}x{k}x{n}"),
        o * 1e6,
        flops / o / 1e9,
        t * 1e6,
        flops / t / 1e9,
        t / o
    );
}

fn model(file: &str, batch: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let graph = lopper_frontend::load_model(&path).expect("model");
    let module = compile(graph);
    let jit = codegen(&module);
    let sizes: BTreeMap<String, usize> = module.sizes.iter().map(|s| (s.clone(), batch)).collect();
    let mut inputs = HashMap::new();
    for b in module.buffers_of(BufferKind::In) {
        let shape = b.ty.shape.bind(&sizes).expect("sizes");
        inputs.insert(b.name.clone(), lopper_runtime::random_tensor(shape, 7));
    }
    let mut bound = jit.bind(&inputs, &sizes).expect("bind");
    let flops: f64 = module
        .kernels
        .iter()
        .map(|k| kernel_cost(&module, k, &sizes).flops)
        .sum();
    let probe = median_time(3, || bound.execute());
    let t = median_time(calls_for(probe), || bound.execute());
    println!(
        "{:<22} lopper {:>10.1} µs {:>7.2} GFLOP/s",
        format!("{} batch {batch}", file.trim_end_matches(".lop")),
        t * 1e6,
        flops / t / 1e9
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a name filters the cases.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f));
    println!(
        "lopper -O{} ({}, 1 thread) against matrixmultiply::sgemm; medians",
        level(),
        if llvm() { "LLVM" } else { "Cranelift" }
    );
    for s in [256, 512, 1024] {
        if wanted(&format!("gemm{s}")) {
            gemm(s, s, s, if s == 1024 { 3 } else { 5 });
        }
    }
    if wanted("matvec") {
        gemm(1, 784, 300, 5);
    }
    for (file, batch) in [
        ("mlp.lop", 1),
        ("mlp.lop", 64),
        ("lenet5.lop", 1),
        ("lenet5.lop", 64),
        ("transformer.lop", 1),
    ] {
        if wanted(file.trim_end_matches(".lop")) {
            model(file, batch);
        }
    }
}
