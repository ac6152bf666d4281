//! The LLVM backend (built with `--features llvm`): the same loop IR, the
//! same answers, the same artifact.
//!
//! Every op case and every example at -O0, -O1 and -O2 (scheduled for the host's
//! vector width: 16 lanes with AVX-512, 8 with AVX2) on the LLVM code
//! against the reference interpreter; the C client of the Cranelift
//! artifact, unchanged, on an LLVM-built `libdigits_mlp.so`; and a snapshot
//! of the LLVM IR of a small kernel before the optimizer, so changes to the
//! lowering show.
#![cfg(feature = "llvm")]

mod common;

use common::{lopper, root, scratch};
use lopper_backends::Backend;
use std::collections::BTreeMap;
use std::process::Command;

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn compiled_for_llvm(g: &lopper_ir::Graph, level: u8) -> lopper_ir::loops::Module {
    let pipeline = format!(
        "{},{}",
        lopper_passes::graph_pipeline(level),
        lopper_passes::loop_pipeline_for(level, Backend::Llvm.lanes())
    );
    match common::run_pipeline(lopper_passes::Ir::Graph(g.clone()), &pipeline) {
        lopper_passes::Ir::Loops(m) => m,
        lopper_passes::Ir::Graph(_) => unreachable!("the pipeline lowers"),
    }
}

fn check(what: &str, graph: &lopper_ir::Graph, level: u8, size: &str, batches: &[usize]) {
    let module = compiled_for_llvm(graph, level);
    let jit = lopper_backends::llvm::compile_jit(&module, if level == 0 { 0 } else { 3 })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    for &b in batches {
        let inputs = common::random_inputs(graph, size, b, 17);
        let want = lopper_runtime::run_graph(graph, &inputs, &BTreeMap::new()).unwrap();
        let sizes: BTreeMap<String, usize> = module.sizes.iter().map(|s| (s.clone(), b)).collect();
        let got = jit.run(&inputs, &sizes).unwrap();
        for ((out, a), (_, e)) in got.iter().zip(&want) {
            common::assert_close(
                &format!("{what} -O{level} b={b} {out} (llvm)"),
                a,
                e,
                RTOL,
                ATOL,
            );
        }
    }
}

#[test]
fn every_op_matches_the_interpreter() {
    for level in 0..=2 {
        for (name, body, batches) in common::SHAPE_CASES {
            let source = format!("model m {{\n {body}\n}}\n");
            let graph = lopper_frontend::compile_source(&source, std::path::Path::new(""))
                .unwrap_or_else(|_| panic!("{name}"));
            check(name, &graph, level, "b", batches);
        }
    }
}

#[test]
fn every_example_matches_the_interpreter() {
    for level in 0..=2 {
        for (file, batches) in [
            ("examples/mlp.lop", &[1usize, 3][..]),
            ("examples/lenet5.lop", &[1, 3]),
            ("examples/transformer.lop", &[1]),
            ("examples/digits_mlp.lop", &[5]),
        ] {
            let graph = common::load(file);
            let size = graph
                .inputs
                .first()
                .and_then(|&i| {
                    graph.node(i).ty.shape.0.iter().find_map(|d| match d {
                        lopper_ir::Dim::Symbol(s) => Some(s.clone()),
                        _ => None,
                    })
                })
                .unwrap_or_default();
            check(file, &graph, level, &size, batches);
        }
    }
}

/// Pruned models on LLVM's sparse kernels: every format, batches below,
/// at and past one vector tile (two vectors of 8 or 16 lanes).
#[test]
fn pruned_models_on_every_sparse_format_match_the_interpreter() {
    let lanes = Backend::Llvm.lanes();
    for (file, prune) in [
        ("examples/digits_mlp.lop", "prune{sparsity=0.9}"),
        ("examples/digits_mlp.lop", "prune{method=nm,n=2,m=4}"),
        (
            "examples/digits_mlp.lop",
            "prune{method=block,block=4x4,sparsity=0.75}",
        ),
        ("examples/lenet5.lop", "prune{sparsity=0.8}"),
        (
            "examples/lenet5.lop",
            "prune{method=structured,sparsity=0.5}",
        ),
    ] {
        let graph = common::load(file);
        let pruned = match common::run_pipeline(
            lopper_passes::Ir::Graph(graph),
            &format!("shape-infer,{prune}"),
        ) {
            lopper_passes::Ir::Graph(g) => g,
            lopper_passes::Ir::Loops(_) => unreachable!("no lowering"),
        };
        // rows=1: one batch row at a time; rows=64: along the batch.
        for (format, rows) in ["auto", "csr", "bsr", "nm", "sell"]
            .into_iter()
            .flat_map(|f| [(f, 1), (f, 64)])
        {
            if format == "nm" && !prune.contains("nm") {
                continue;
            }
            let pipeline = format!(
                "analyze-sparsity{{format={format},lanes={lanes},rows={rows}}},{}",
                lopper_passes::loop_pipeline_for(2, lanes)
            );
            let module =
                match common::run_pipeline(lopper_passes::Ir::Graph(pruned.clone()), &pipeline) {
                    lopper_passes::Ir::Loops(m) => m,
                    lopper_passes::Ir::Graph(_) => unreachable!("the pipeline lowers"),
                };
            let jit = lopper_backends::llvm::compile_jit(&module, 3)
                .unwrap_or_else(|e| panic!("{file} {prune} {format} rows={rows}: {e}"));
            for b in [1, 5, 2 * lanes as usize + 1] {
                let inputs = common::random_inputs(&pruned, "batch", b, 5);
                let want = lopper_runtime::run_graph(&pruned, &inputs, &BTreeMap::new()).unwrap();
                let sizes = BTreeMap::from([("batch".to_string(), b)]);
                let got = jit.run(&inputs, &sizes).unwrap();
                common::assert_close(
                    &format!("{file} {prune} {format} rows={rows} b={b} (llvm)"),
                    &got[0].1,
                    &want[0].1,
                    RTOL,
                    ATOL,
                );
            }
        }
    }
}

/// `permute` at 4 and 16 lanes (`vpermilps`, `vpermps`) on the LLVM code
/// against plain loops.
#[test]
fn permute_matches_plain_loops() {
    for (case, lanes) in [(0, 4), (1, 16)] {
        let module = common::lir_case("tests/filetests/verify-loops/permute.lir", case);
        let jit = lopper_backends::llvm::compile_jit(&module, 3).unwrap();
        for n in [1usize, 3] {
            let x = lopper_runtime::random_tensor(vec![n, lanes], n as u64);
            let want = common::permute_reference(&module, &x);
            let inputs = std::collections::HashMap::from([("x".to_string(), x)]);
            let sizes = BTreeMap::from([("n".to_string(), n)]);
            let got = jit.run(&inputs, &sizes).unwrap();
            common::assert_close(&format!("permute{lanes}"), &got[0].1, &want, 1e-6, 1e-6);
        }
    }
}

/// `lopper prune --report --backend llvm` and `lopper check --backend
/// llvm` report LLVM's choices: sliced ELLPACK for one row (with AVX-512),
/// CSR for a batch of 64.
#[test]
fn reports_choose_for_llvm() {
    let dir = scratch("llvm-report");
    let model = root().join("examples/mlp.lop");
    let model = model.to_str().unwrap();
    let (code, out, err) = lopper(
        &dir,
        &[
            "prune",
            model,
            "--sparsity",
            "0.9",
            "--report",
            "--backend",
            "llvm",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lanes = Backend::Llvm.lanes();
    assert!(
        out.contains(&format!("llvm, {lanes} lanes, 1 row(s)")),
        "{out}"
    );
    assert!(out.contains(&format!("sell{lanes}")), "{out}");
}

/// `examples/c/digits.c`, unchanged, on a library built by LLVM.
#[test]
fn c_client_runs_on_an_llvm_library() {
    let dir = scratch("llvm-c-client");
    let model = root().join("examples/digits_mlp.lop");
    let (code, out, err) = lopper(
        &dir,
        &[
            "compile",
            model.to_str().unwrap(),
            "--backend",
            "llvm",
            "-o",
            "libdigits_mlp.so",
            "--emit",
            "so,h,llvm-ir,asm",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("digits_mlp_run"), "{out}");
    for f in ["digits_mlp.ll", "digits_mlp.opt.ll", "digits_mlp.s"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let client = common::build_c_client(&dir);
    let data = root().join("../shared/data/digits/digits.safetensors");
    let out = Command::new(&client).arg(&data).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "accuracy: 0.9806 (353/360)\n"
    );
}

/// The LLVM IR before the optimizer of a fused linear + bias + relu, plain
/// and with its output columns in 8-lane vectors.
#[test]
fn llvm_ir_of_small_kernels() {
    let source = "model m {\n input x: f32[b, 3]\n param w: f32[3, 8] = ones()\n param c: f32[8] = zeros()\n output y = relu(x @ w + c)\n}\n";
    let graph = lopper_frontend::compile_source(source, std::path::Path::new("")).unwrap();
    for (name, schedule) in [
        ("plain", "shape-infer,lower-to-loops"),
        (
            "vectors",
            "shape-infer,lower-to-loops,vectorize{loop=i1,lanes=8},simplify-loops",
        ),
    ] {
        let module = match common::run_pipeline(lopper_passes::Ir::Graph(graph.clone()), schedule) {
            lopper_passes::Ir::Loops(m) => m,
            lopper_passes::Ir::Graph(_) => unreachable!(),
        };
        let kernels =
            lopper_backends::llvm::codegen::compile_kernels(&module, "m", 0, &Default::default())
                .unwrap();
        // The target triple and data layout are the host's; the body is not.
        let body: String = kernels
            .ir
            .lines()
            .filter(|l| {
                !l.starts_with("target ")
                    && !l.starts_with("; ModuleID")
                    && !l.starts_with("source_filename")
            })
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(name, body);
    }
}

/// `--target-cpu` picks LLVM's CPU and the vector width of the schedules:
/// 8 lanes and `ymm` registers for Haswell, 16 and `zmm` for Skylake-AVX512.
#[test]
fn target_cpu_sets_the_vector_width() {
    let dir = scratch("llvm-target-cpu");
    let model = root().join("examples/mlp.lop");
    for (cpu, lanes, register) in [("haswell", 8, "ymm"), ("skylake-avx512", 16, "zmm")] {
        let (code, _, err) = lopper(
            &dir,
            &[
                "compile",
                model.to_str().unwrap(),
                "--backend",
                "llvm",
                "--target-cpu",
                cpu,
                "-o",
                &format!("libmlp{lanes}.so"),
                "--emit",
                "so,lir,asm",
            ],
        );
        assert_eq!(code, 0, "{cpu}: {err}");
        let lir = std::fs::read_to_string(dir.join(format!("mlp{lanes}.lir"))).unwrap();
        assert!(lir.contains(&format!("f32x{lanes}")), "{cpu}");
        let asm = std::fs::read_to_string(dir.join(format!("mlp{lanes}.s"))).unwrap();
        assert!(asm.contains(register), "{cpu}");
        if cpu == "haswell" {
            assert!(!asm.contains("zmm"), "AVX-512 code for Haswell");
        }
    }
}
