//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lopper_ir::graph::weights::RawTensor;
use lopper_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The small one-op models of `tests/data/ops/` (with ONNX Runtime's outputs
/// beside them), covering every op the examples do not use.
pub const OP_CASES: &[&str] = &[
    "conv_groups",
    "pools",
    "batch_norm",
    "elementwise",
    "reductions",
    "concat_gelu",
    "layer_norm_matmul",
];

/// The repository root (integration tests run there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads a `.lop` model given relative to the root, failing with its diagnostics.
pub fn load(relative: &str) -> Graph {
    lopper_frontend::load_model(Path::new(relative)).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Reads one tensor of a safetensors file.
pub fn read(path: &str, name: &str) -> RawTensor {
    lopper_runtime::read_tensor_file(&root().join(path), Some(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A raw tensor as an f32 tensor.
pub fn tensor(raw: RawTensor) -> Tensor {
    Tensor {
        shape: raw.shape,
        data: raw.values,
    }
}

/// Asserts `|actual - expected| <= atol + rtol·|expected|` everywhere and equal shapes.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, rtol: f32, atol: f32) {
    assert_eq!(actual.shape, expected.shape, "{what}: shapes differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &e)) in actual.data.iter().zip(&expected.data).enumerate() {
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        if excess > worst.0 || !a.is_finite() {
            worst = (excess.max(f32::MIN_POSITIVE), i);
        }
    }
    assert!(
        worst.0 <= 0.0,
        "{what}: element {} is {} but expected {} (rtol {rtol}, atol {atol})",
        worst.1,
        actual.data[worst.1],
        expected.data[worst.1]
    );
}

/// Runs the lopper binary in `dir`; returns exit code, stdout and stderr.
pub fn lopper(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the lopper binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names of the files in `dir`, sorted.
pub fn sorted_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lopper-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Runs `pipeline` on `ir` with the verifier after every pass.
pub fn run_pipeline(mut ir: lopper_passes::Ir, pipeline: &str) -> lopper_passes::Ir {
    let instrumentation = lopper_passes::Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    lopper_passes::PassManager::new(pipeline, instrumentation)
        .unwrap()
        .run_ir(&mut ir, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    ir
}

/// `g` after the default graph pipeline.
pub fn optimized(g: &Graph) -> Graph {
    match run_pipeline(
        lopper_passes::Ir::Graph(g.clone()),
        lopper_passes::DEFAULT_PIPELINE,
    ) {
        lopper_passes::Ir::Graph(g) => g,
        lopper_passes::Ir::Loops(_) => unreachable!("the default pipeline does not lower"),
    }
}

/// `g` as the code generators get it: the default pipeline, lowering and
/// memory planning.
pub fn lowered(g: &Graph) -> lopper_ir::loops::Module {
    let pipeline = format!(
        "{},lower-to-loops,plan-memory",
        lopper_passes::DEFAULT_PIPELINE
    );
    match run_pipeline(lopper_passes::Ir::Graph(g.clone()), &pipeline) {
        lopper_passes::Ir::Loops(m) => m,
        lopper_passes::Ir::Graph(_) => unreachable!("the pipeline lowers"),
    }
}
