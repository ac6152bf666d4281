//! Vector forms of the loop IR (`f32x4`): the loop interpreter and the
//! Cranelift JIT against plain Rust loops on the same numbers.

mod common;

use std::collections::{BTreeMap, HashMap};

#[test]
fn vector_kernels_match_plain_loops() {
    let text =
        std::fs::read_to_string(common::root().join("tests/filetests/verify-loops/vectors.lir"))
            .unwrap();
    let case = text.split("\n// -----\n").next().unwrap();
    let module = lopper_ir::loops::parse_lir(case).unwrap_or_else(|d| panic!("{d:?}"));
    let w = module
        .buffer("w")
        .unwrap()
        .data
        .as_ref()
        .unwrap()
        .data
        .clone();
    let jit = lopper_backends::cranelift::compile_jit(&module).unwrap();
    for n in [1usize, 3] {
        let x = lopper_runtime::random_tensor(vec![n, 10], n as u64);
        let mut y = vec![0.0f32; n * 3];
        let mut z = vec![0.0f32; n * 8];
        for i in 0..n {
            for j in 0..3 {
                y[i * 3 + j] = (0..10)
                    .map(|k| x.data[i * 10 + k] as f64 * w.data[j * 10 + k] as f64)
                    .sum::<f64>() as f32;
            }
            for k in 0..8 {
                z[i * 8 + k] = (x.data[i * 10 + k + 1] as f64).exp().max(0.5) as f32;
            }
        }
        let inputs = HashMap::from([("x".to_string(), x)]);
        let sizes = BTreeMap::from([("n".to_string(), n)]);
        let from_loops = lopper_runtime::run_module(&module, &inputs, &BTreeMap::new()).unwrap();
        let from_jit = jit.run(&inputs, &sizes).unwrap();
        for got in [&from_loops, &from_jit] {
            common::assert_close(
                "dot",
                &got[0].1,
                &lopper_ir::Tensor::new(vec![n, 3], y.clone()).unwrap(),
                1e-5,
                1e-6,
            );
            common::assert_close(
                "exp",
                &got[1].1,
                &lopper_ir::Tensor::new(vec![n, 8], z.clone()).unwrap(),
                1e-6,
                1e-6,
            );
        }
    }
}

/// `permute` (a lane lookup, `pshufb` on Cranelift) on the loop interpreter
/// and the Cranelift JIT against plain loops.
#[test]
fn permute_matches_plain_loops() {
    let module = common::lir_case("tests/filetests/verify-loops/permute.lir", 0);
    let jit = lopper_backends::cranelift::compile_jit(&module).unwrap();
    for n in [1usize, 5] {
        let x = lopper_runtime::random_tensor(vec![n, 4], 7 + n as u64);
        let want = common::permute_reference(&module, &x);
        let inputs = HashMap::from([("x".to_string(), x)]);
        let sizes = BTreeMap::from([("n".to_string(), n)]);
        let from_loops = lopper_runtime::run_module(&module, &inputs, &BTreeMap::new()).unwrap();
        let from_jit = jit.run(&inputs, &sizes).unwrap();
        for got in [&from_loops, &from_jit] {
            common::assert_close("permute", &got[0].1, &want, 1e-6, 1e-6);
        }
    }
}
