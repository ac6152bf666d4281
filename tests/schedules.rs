//! The locality passes change the loops, never the numbers.
//!
//! Every op case (symbolic batch, odd sizes, strides, padding, groups) and
//! every example is compiled at -O0, -O1 and -O2 and run by the Cranelift
//! JIT against the reference interpreter; hand-written schedules with
//! awkward tile sizes (remainders in both directions, sizes that do not
//! divide 300 or 784) run on the JIT and the loop interpreter; the FLOP
//! counter counts a GEMM's 2·M·N·K whatever the schedule.

mod common;

use lopper_backends::cranelift::compile_jit;
use lopper_ir::loops::{kernel_cost, Module};
use lopper_ir::Graph;
use std::collections::BTreeMap;

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn build(name: &str, body: &str) -> Graph {
    let source = format!("model m {{\n {body}\n}}\n");
    lopper_frontend::compile_source(&source, std::path::Path::new("")).unwrap_or_else(|d| {
        panic!(
            "{name}:\n{}",
            lopper_ir::diagnostic::render(name, &source, &d)
        )
    })
}

/// Runs `module` on the JIT (and the loop interpreter when asked) against
/// the graph interpreter on `graph`.
fn check(what: &str, graph: &Graph, module: &Module, size: &str, batches: &[usize], loops: bool) {
    // Cranelift has 128-bit vectors: 8 lanes run on the loop interpreter.
    let wide = lopper_ir::loops::print_lir(module).contains("f32x8");
    let jit = (!wide).then(|| compile_jit(module).unwrap_or_else(|e| panic!("{what}: {e}")));
    for &b in batches {
        let inputs = common::random_inputs(graph, size, b, 31);
        let want = lopper_runtime::run_graph(graph, &inputs, &BTreeMap::new()).unwrap();
        if let Some(jit) = &jit {
            let sizes: BTreeMap<String, usize> =
                module.sizes.iter().map(|s| (s.clone(), b)).collect();
            let got = jit.run(&inputs, &sizes).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(&format!("{what} b={b} {out} (cranelift)"), a, e, RTOL, ATOL);
            }
        }
        if loops {
            let got = lopper_runtime::run_module(module, &inputs, &BTreeMap::new()).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(&format!("{what} b={b} {out} (loops)"), a, e, RTOL, ATOL);
            }
        }
    }
}

#[test]
fn every_op_at_every_level_matches_the_interpreter() {
    for level in 0..=2 {
        for (name, body, batches) in common::SHAPE_CASES {
            let graph = build(name, body);
            let module = common::compiled_at(&graph, level);
            check(
                &format!("{name} -O{level}"),
                &graph,
                &module,
                "b",
                batches,
                false,
            );
        }
    }
}

#[test]
fn every_example_at_every_level_matches_the_interpreter() {
    for level in 0..=2 {
        for (file, batches) in [
            ("examples/mlp.lop", &[1usize, 3][..]),
            ("examples/lenet5.lop", &[1, 3]),
            ("examples/transformer.lop", &[1]),
            ("examples/digits_mlp.lop", &[5]),
        ] {
            let graph = common::load(file);
            let module = common::compiled_at(&graph, level);
            let size = module.sizes.first().cloned().unwrap_or_default();
            check(
                &format!("{file} -O{level}"),
                &graph,
                &module,
                &size,
                batches,
                false,
            );
        }
    }
}

/// Tile sizes that leave remainders everywhere, a second level of tiling,
/// packing into panels that do not divide the weights, vectors with a
/// scalar remainder, full and partial unrolling.
#[test]
fn awkward_schedules_match_the_interpreter() {
    let linear = "input x: f32[b, 784]\n param w: f32[300, 784] = kaiming(seed = 1)\n param c: f32[300] = normal(0, 0.1, seed = 2)\n output y = relu(linear(x, w, c))";
    let conv = "input x: f32[b, 3, 9, 9]\n param w: f32[5, 3, 3, 3] = kaiming(seed = 5)\n output y = conv2d(x, w, padding = [1, 1, 0, 2])";
    let matmul = "input x: f32[b, 7]\n param w: f32[7, 10] = normal(0, 0.5, seed = 4)\n output y = tanh(x @ w)";
    let cases: &[(&str, &str, &str, bool)] = &[
        (
            "linear 3x7",
            linear,
            "tile{loops=[i0,i1],sizes=[3,7]},pack{buffer=w,dim=0,size=7},unroll{loop=i0.i}",
            false,
        ),
        (
            "linear two levels",
            linear,
            "tile{loops=[i1],sizes=[64]},tile{loops=[i1.i],sizes=[16]},pack{buffer=w,dim=0,size=16},vectorize{loop=i1.i.i},unroll{loop=i1.i.i.v},unroll{loop=k,factor=5}",
            false,
        ),
        (
            "conv channels x width",
            conv,
            "tile{kernel=conv2d_1,loops=[i1,i3],sizes=[2,4]},vectorize{kernel=conv2d_1,loop=i3.i},unroll{kernel=conv2d_1,loop=i1.i}",
            true,
        ),
        (
            "matmul vectors with remainder",
            matmul,
            "interchange{loops=[i0,i1]},vectorize{loop=i1,lanes=4},unroll{loop=i1.v}",
            true,
        ),
        (
            "matmul 8 lanes",
            matmul,
            "tile{loops=[i0,i1],sizes=[2,8]},vectorize{loop=i1.i,lanes=8}",
            true,
        ),
    ];
    for (what, body, schedule, loops) in cases {
        let graph = build(what, body);
        let pipeline = format!("shape-infer,lower-to-loops,{schedule},plan-memory");
        let module = match common::run_pipeline(lopper_passes::Ir::Graph(graph.clone()), &pipeline)
        {
            lopper_passes::Ir::Loops(m) => m,
            lopper_passes::Ir::Graph(_) => unreachable!(),
        };
        // The transformed module prints and parses back (packed weights
        // included) and still gives the same answers.
        let text = lopper_ir::loops::print_lir(&module);
        let again = lopper_ir::loops::parse_lir(&text).unwrap_or_else(|d| {
            panic!(
                "{what}:\n{}",
                lopper_ir::diagnostic::render("lir", &text, &d)
            )
        });
        assert_eq!(again, module, "{what}: the text form must parse back");
        let batches: &[usize] = if *loops { &[1, 2, 5] } else { &[1, 2, 5, 64] };
        check(what, &graph, &again, "b", batches, *loops);
    }
}

#[test]
fn flops_count_the_work_whatever_the_schedule() {
    // 24 columns: whole tiles of 12 at -O2, so every level does 2·M·N·K.
    let graph = build(
        "gemm",
        "input a: f32[m, 100]\n param w: f32[100, 24] = normal(seed = 1)\n output y = a @ w",
    );
    let count = |module: &Module, m: usize| -> f64 {
        let sizes = BTreeMap::from([("m".to_string(), m)]);
        module
            .kernels
            .iter()
            .map(|k| kernel_cost(module, k, &sizes).flops)
            .sum()
    };
    for level in 0..=2 {
        let module = common::compiled_at(&graph, level);
        for m in [1usize, 7, 64] {
            assert_eq!(
                count(&module, m),
                (2 * m * 100 * 24) as f64,
                "-O{level} m={m}"
            );
        }
    }
    // 30 columns: the last tile (6) is one vector plus a vector ending at
    // column 29, which computes columns 26 and 27 a second time; its two
    // accumulators are split four ways (up to 8 chains), whose partial
    // sums take three more additions of two vectors a row.
    let graph = build(
        "gemm",
        "input a: f32[m, 100]\n param w: f32[100, 30] = normal(seed = 1)\n output y = a @ w",
    );
    let module = common::compiled_at(&graph, 2);
    for m in [1usize, 7] {
        assert_eq!(
            count(&module, m),
            (2 * m * 100 * (30 + 2) + m * 3 * 2 * 4) as f64,
            "m={m}"
        );
    }
}

/// -O2 really schedules: the linear layer of the MLP is vectorized and its
/// weights packed, and the remarks say what was chosen.
#[test]
fn auto_schedule_vectorizes_the_matmul_kernels() {
    let module = common::compiled_at(&common::load("examples/mlp.lop"), 2);
    let text = lopper_ir::loops::print_lir(&module);
    assert!(
        text.contains("%fc1.weight.packed: const f32[10,784,32]"),
        "{text}"
    );
    assert!(text.contains("vload<4>(%fc1.weight.packed["), "{text}");
    let naive =
        lopper_ir::loops::print_lir(&common::compiled_at(&common::load("examples/mlp.lop"), 0));
    assert!(!naive.contains("vload"));
}
