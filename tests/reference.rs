//! The interpreter against numbers lopper did not compute: ONNX Runtime's
//! outputs (tests/data/make_expected.py) and scikit-learn's (../shared/data).
//!
//! Each model runs twice: as built (no passes) and after the default graph
//! pipeline, so the passes are checked against the same oracle.

mod common;

use common::{assert_close, load, read, tensor};
use std::collections::{BTreeMap, HashMap};

/// ONNX Runtime accumulates in f32, the interpreter in f64: agreement to
/// 1e-4 relative, with an absolute floor of 1e-5 for values near zero.
const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn check(model: &str, inputs: &[(&str, &str)], data: &str, expected: &str) {
    let built = load(model);
    let feeds: HashMap<String, lopper_ir::Tensor> = inputs
        .iter()
        .map(|(input, tensor_name)| (input.to_string(), tensor(read(data, tensor_name))))
        .collect();
    let want = tensor(read(data, expected));
    for (stage, g) in [
        ("as built", built.clone()),
        ("after the default pipeline", common::optimized(&built)),
    ] {
        let out = lopper_runtime::run_graph(&g, &feeds, &BTreeMap::new()).unwrap();
        assert_close(&format!("{model} {stage}"), &out[0].1, &want, RTOL, ATOL);
    }
}

#[test]
fn mlp_matches_onnx_runtime_batch_64() {
    check(
        "examples/mlp.lop",
        &[("x", "input")],
        "tests/data/ort/mlp_b64.safetensors",
        "output",
    );
}

#[test]
fn lenet5_matches_onnx_runtime_batch_1() {
    check(
        "examples/lenet5.lop",
        &[("x", "input")],
        "tests/data/ort/lenet5_b1.safetensors",
        "output",
    );
}

#[test]
fn lenet5_matches_onnx_runtime_batch_64() {
    check(
        "examples/lenet5.lop",
        &[("x", "input")],
        "tests/data/ort/lenet5_b64.safetensors",
        "output",
    );
}

#[test]
fn transformer_matches_onnx_runtime() {
    check(
        "examples/transformer.lop",
        &[("x", "input")],
        "tests/data/ort/transformer_b1.safetensors",
        "output",
    );
}

/// Small graphs covering every op the examples do not use.
#[test]
fn every_op_matches_onnx_runtime() {
    for name in common::OP_CASES {
        // The two-input cases feed `y` as well.
        let inputs: &[(&str, &str)] = if ["elementwise", "concat_gelu"].contains(name) {
            &[("x", "x"), ("y", "y")]
        } else {
            &[("x", "x")]
        };
        check(
            &format!("tests/data/ops/{name}.lop"),
            inputs,
            &format!("tests/data/ops/{name}.safetensors"),
            "expected",
        );
    }
}

/// scikit-learn's probabilities for the 360 test digits, within 1e-5.
#[test]
fn digits_mlp_matches_scikit_learn() {
    let g = common::optimized(&load("examples/digits_mlp.lop"));
    let data = "../shared/data/digits/digits.safetensors";
    let x = tensor(read(data, "test_x"));
    let labels = read(data, "test_y").values;
    let want = tensor(read(
        "../shared/data/digits/digits_mlp_expected.safetensors",
        "test_proba",
    ));
    let feeds = HashMap::from([("x".to_string(), x)]);
    let out = lopper_runtime::run_graph(&g, &feeds, &BTreeMap::new()).unwrap();
    let proba = &out[0].1;
    assert_close("digits_mlp probabilities", proba, &want, 0.0, 1e-5);
    let correct = proba
        .data
        .chunks(10)
        .zip(&labels)
        .filter(|(row, &label)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == label as usize
        })
        .count();
    assert_eq!((correct, labels.len()), (353, 360), "accuracy 0.9806");
}

/// A wrong input shape is an error naming the input, not a wrong answer.
#[test]
fn wrong_input_shape_is_refused() {
    let g = load("examples/mlp.lop");
    let feeds = HashMap::from([("x".to_string(), lopper_ir::Tensor::full(vec![2, 783], 0.0))]);
    let err = lopper_runtime::run_graph(&g, &feeds, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `x` has shape [2, 783] but the model expects f32[batch,784]: dim 1 is 783, expected 784"
    );
}
