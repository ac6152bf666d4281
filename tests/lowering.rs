//! `lower-to-loops` keeps what a model computes: every example and every
//! op case, lowered to loop IR and run by the loop interpreter, equals the
//! graph interpreter; every lowered module prints and parses back exactly.

mod common;

use lopper_ir::loops::{parse_lir, print_lir};
use lopper_passes::lower_to_loops::lower_to_loops;
use std::collections::{BTreeMap, HashMap};

/// The loop interpreter sums in f32 with fma, the graph interpreter in f64.
const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn check(path: &str, sizes: &[(&str, usize)]) -> lopper_ir::loops::Module {
    let g = common::optimized(&common::load(path));
    let m = lower_to_loops(&g, true, 0).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = print_lir(&m);
    let parsed = parse_lir(&text).unwrap_or_else(|d| {
        panic!(
            "{path}: the .lir does not parse back:\n{}",
            lopper_ir::diagnostic::render(path, &text, &d)
        )
    });
    assert_eq!(print_lir(&parsed), text, "{path}: .lir round trip");
    let bound: BTreeMap<String, usize> = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut inputs = HashMap::new();
    for (seed, &i) in g.inputs.iter().enumerate() {
        let shape = g.node(i).ty.shape.bind(&bound).unwrap();
        inputs.insert(
            g.node(i).name.clone(),
            lopper_runtime::random_tensor(shape, seed as u64 + 1),
        );
    }
    let want = lopper_runtime::run_graph(&g, &inputs, &BTreeMap::new()).unwrap();
    let got = lopper_runtime::run_module(&parsed, &inputs, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(got.len(), want.len());
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        common::assert_close(&format!("{path} output {name}"), a, b, RTOL, ATOL);
    }
    m
}

#[test]
fn examples_lower_and_agree() {
    for (name, sizes) in [
        ("mlp", vec![("batch", 3)]),
        ("lenet5", vec![("batch", 2)]),
        ("transformer", vec![("batch", 1)]),
        ("digits_mlp", vec![("batch", 5)]),
    ] {
        let m = check(&format!("examples/{name}.lop"), &sizes);
        insta::assert_snapshot!(format!("{name}.lir"), print_lir(&m));
    }
}

#[test]
fn every_op_lowers_and_agrees() {
    for case in common::OP_CASES {
        check(&format!("tests/data/ops/{case}.lop"), &[("n", 3)]);
    }
}
