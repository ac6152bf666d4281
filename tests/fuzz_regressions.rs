//! Inputs the fuzzers (`fuzz/`, cargo fuzz) found crashing lopper, kept in
//! `fuzz/regressions/<target>/` and run through the same code as the fuzz
//! targets: each must now give an error or a result, never a panic.

mod common;

use prost::Message;

/// Runs one fuzz target's code on `data`, as `fuzz/fuzz_targets/<target>.rs` does.
fn run_target(target: &str, data: &[u8]) {
    let text = std::str::from_utf8(data);
    match target {
        "dsl" => {
            if let Ok(t) = text {
                let _ =
                    lopper_frontend::compile_source(t, std::path::Path::new("/nonexistent-fuzz"));
            }
        }
        "gir" => {
            if let Ok(Ok(g)) = text.map(lopper_ir::graph::parse_gir) {
                let _ = lopper_ir::graph::print_gir(&g);
            }
        }
        "lir" => {
            if let Ok(Ok(m)) = text.map(lopper_ir::loops::parse_lir) {
                let _ = lopper_ir::loops::print_lir(&m);
            }
        }
        "safetensors" => {
            for name in ["x", "w", "weight"] {
                let _ = lopper_ir::graph::weights::read_tensor(data, "fuzz.safetensors", name);
            }
        }
        "onnx" => {
            if let Ok(model) = lopper_frontend::onnx::proto::ModelProto::decode(data) {
                let _ = lopper_frontend::onnx::import_model(
                    &model,
                    std::path::Path::new("/nonexistent-fuzz"),
                );
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn inputs_that_crashed_fuzz_targets_do_not_crash() {
    let root = common::root().join("fuzz/regressions");
    let mut count = 0;
    for target in common::sorted_files(&root) {
        for file in common::sorted_files(&root.join(&target)) {
            let data = std::fs::read(root.join(&target).join(&file)).unwrap();
            let outcome = std::panic::catch_unwind(|| run_target(&target, &data));
            assert!(outcome.is_ok(), "fuzz/regressions/{target}/{file} panics");
            count += 1;
        }
    }
    assert!(count > 0, "no regression inputs found");
}
