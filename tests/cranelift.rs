//! The Cranelift JIT against the reference interpreter: every example and
//! every op case, lowered and compiled to native code, at several batch
//! sizes. The JIT computes in f32 with fma; the interpreter in f64.

mod common;

use lopper_backends::cranelift::compile_jit;
use std::collections::{BTreeMap, HashMap};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn check(path: &str, size: &str, values: &[usize]) {
    let graph = common::load(path);
    let module = common::lowered(&graph);
    let jit = compile_jit(&module).unwrap_or_else(|e| panic!("{path}: {e}"));
    for &v in values {
        let bound = BTreeMap::from([(size.to_string(), v)]);
        let mut inputs = HashMap::new();
        for (seed, &i) in graph.inputs.iter().enumerate() {
            let shape = graph.node(i).ty.shape.bind(&bound).unwrap();
            inputs.insert(
                graph.node(i).name.clone(),
                lopper_runtime::random_tensor(shape, 10 + seed as u64),
            );
        }
        let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
        let sizes: BTreeMap<String, usize> = module.sizes.iter().map(|s| (s.clone(), v)).collect();
        let got = jit
            .run(&inputs, &sizes)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        for ((name, a), (_, b)) in got.iter().zip(&want) {
            common::assert_close(
                &format!("{path} {size}={v} output {name}"),
                a,
                b,
                RTOL,
                ATOL,
            );
        }
    }
}

#[test]
fn examples_match_the_interpreter() {
    check("examples/mlp.lop", "batch", &[1, 3, 64]);
    check("examples/lenet5.lop", "batch", &[1, 3]);
    check("examples/transformer.lop", "batch", &[1, 2]);
    check("examples/digits_mlp.lop", "batch", &[1, 7]);
}

#[test]
fn every_op_matches_the_interpreter() {
    for case in common::OP_CASES {
        check(&format!("tests/data/ops/{case}.lop"), "n", &[1, 3]);
    }
}
