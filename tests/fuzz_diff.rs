//! Differential testing of random models (`lopper-modelgen`): 200 generated
//! models on the interpreter, Cranelift and (with `--features llvm`) LLVM at
//! -O0 and -O2, every fourth one pruned through the sparse kernels; the
//! models that found bugs, kept as regressions; and the generator and the
//! minimizer themselves. `lopper fuzz-diff --seeds N` runs thousands.

mod common;

use lopper_modelgen::{differential, generate, minimize, Config};

/// Seeds `range` through the differential test; the failures with their models.
fn run_seeds(range: std::ops::Range<u64>, bounds_check: bool) {
    let config = Config {
        bounds_check,
        ..Config::default()
    };
    let mut failures = Vec::new();
    for seed in range {
        let model = generate(seed);
        if let Err(f) = differential(&model.text(), seed, &config) {
            failures.push(format!("seed {seed}: {f}\n{}", model.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// 200 models in two halves, so that the two run side by side.
#[test]
fn generated_models_agree_on_every_backend_seeds_0_to_99() {
    run_seeds(0..100, false);
}

#[test]
fn generated_models_agree_on_every_backend_seeds_100_to_199() {
    run_seeds(100..200, false);
}

/// The same test with bounds checks compiled into the code: no access of
/// the generated kernels leaves its buffer (a check would abort the test).
#[test]
fn generated_models_agree_with_bounds_checks() {
    run_seeds(200..240, true);
}

/// Each model in `tests/data/fuzz/seed-N.lop` once made the differential
/// test fail (its comment says how); `N` picks the pruning it failed under.
#[test]
fn models_that_found_bugs_stay_fixed() {
    let dir = common::root().join("tests/data/fuzz");
    let files = common::sorted_files(&dir);
    assert!(!files.is_empty());
    for file in files {
        let seed: u64 = file
            .trim_start_matches("seed-")
            .trim_end_matches(".lop")
            .parse()
            .expect("files are named seed-N.lop");
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        if let Err(f) = differential(&text, seed, &Config::default()) {
            panic!("{file}: {f}");
        }
    }
}

/// The same seed gives the same model; 2 to 30 ops; over 300 seeds every op
/// of the language appears.
#[test]
fn the_generator_is_reproducible_and_covers_every_op() {
    let mut text = String::new();
    for seed in 0..300 {
        let model = generate(seed);
        assert_eq!(model.text(), generate(seed).text(), "seed {seed}");
        assert!(
            (1..=30).contains(&model.ops()),
            "seed {seed}: {} ops",
            model.ops()
        );
        text.push_str(&model.text());
    }
    for op in lopper_ir::graph::op::OP_NAMES {
        let used = match *op {
            "input" => text.contains("input "),
            "param" => text.contains("param "),
            "add" => text.contains(" + "),
            "sub" => text.contains(" - "),
            "mul" => text.contains(" * "),
            "div" => text.contains(" / "),
            "matmul" => text.contains(" @ "),
            other => text.contains(&format!("{other}(")),
        };
        assert!(used, "no generated model uses `{op}`");
    }
}

/// The minimizer keeps what the failure needs and drops the rest.
#[test]
fn the_minimizer_drops_ops_the_failure_does_not_need() {
    let seed = (0..200)
        .find(|&s| {
            let m = generate(s);
            m.ops() > 8 && m.text().contains("conv2d(")
        })
        .expect("a large model with a conv2d");
    let model = generate(seed);
    let small = minimize(&model, |m| m.text().contains("conv2d("));
    assert!(small.text().contains("conv2d("));
    assert!(
        small.ops() < model.ops(),
        "{} of {} ops",
        small.ops(),
        model.ops()
    );
    assert!(small.ops() <= 2, "{}", small.text());
}
