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

/// ReLU and max pooling on NaN, infinities and signed zeros: the JIT's
/// branch-free max (one `maxps` where one operand is a constant or a pool's
/// accumulator, which never holds NaN) gives what the interpreter gives, bit
/// for bit. (Which zero a tie of -0 and +0 keeps is left open, as
/// `f32::max` leaves it; no window here has a tie that decides it.)
#[test]
fn max_of_nan_and_signed_zeros_matches_the_interpreter() {
    let source = "model m {
        input x: f32[1, 2, 4, 8]
        output y = max_pool2d(relu(x), kernel = 2) + max_pool2d(x, kernel = 2)
    }";
    let graph = lopper_frontend::compile_source(source, &common::root())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let module = common::lowered(&graph);
    let jit = compile_jit(&module).unwrap_or_else(|e| panic!("{e}"));
    let special = [
        f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.5,
        2.5,
    ];
    let data: Vec<f32> = (0..64).map(|i| special[(i * 5 + i / 7) % 7]).collect();
    let x = lopper_ir::Tensor {
        shape: vec![1, 2, 4, 8],
        data,
    };
    let inputs = HashMap::from([("x".to_string(), x)]);
    let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
    let got = jit.run(&inputs, &BTreeMap::new()).unwrap();
    let (a, b) = (&got[0].1, &want[0].1);
    assert!(
        a.data.iter().any(|v| v.is_nan()) || b.data.iter().all(|v| !v.is_nan()),
        "the inputs reach a NaN output or none expected"
    );
    for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "element {i}: {x} from the JIT, {y} from the interpreter"
        );
    }
}
