//! Shared objects built by `lopper compile`: called from Rust (libloading)
//! and from the C client, against the reference interpreter.

mod common;

use common::{lopper, root, scratch};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

type Run = unsafe extern "C" fn(*const f32, *mut f32, i64) -> i32;

fn compile(model: &str, dir: &Path, lib: &str) -> std::path::PathBuf {
    let out = dir.join(lib);
    let (code, _, err) = lopper(&root(), &["compile", model, "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out
}

/// One input, one output, one symbolic size: calls `entry` at each batch
/// size and compares with the interpreter.
fn check_single_io(model: &str, lib: &str, entry: &str, batches: &[usize]) {
    let dir = scratch(lib);
    let path = compile(model, &dir, lib);
    let graph = common::load(model);
    // SAFETY: the library was just built by lopper; its entry point has the
    // signature its header declares for a one-input, one-output model.
    unsafe {
        let library = libloading::Library::new(&path).unwrap();
        let run: libloading::Symbol<Run> = library.get(entry.as_bytes()).unwrap();
        for &batch in batches {
            let shape = graph
                .node(graph.inputs[0])
                .ty
                .shape
                .bind(&BTreeMap::from([("batch".to_string(), batch)]))
                .unwrap();
            let x = lopper_runtime::random_tensor(shape, batch as u64);
            let want = lopper_runtime::run_graph(
                &graph,
                &HashMap::from([("x".to_string(), x.clone())]),
                &BTreeMap::new(),
            )
            .unwrap();
            let mut y = vec![f32::NAN; want[0].1.numel()];
            assert_eq!(run(x.data.as_ptr(), y.as_mut_ptr(), batch as i64), 0);
            let got = lopper_ir::Tensor::new(want[0].1.shape.clone(), y).unwrap();
            common::assert_close(
                &format!("{lib} batch {batch}"),
                &got,
                &want[0].1,
                1e-4,
                1e-5,
            );
        }
        // Bad sizes and null buffers are refused before any write.
        let x = vec![0.0f32; 784];
        let mut y = vec![7.0f32; 10];
        assert_eq!(run(x.as_ptr(), y.as_mut_ptr(), 0), 1);
        assert_eq!(run(x.as_ptr(), y.as_mut_ptr(), -5), 1);
        assert_eq!(run(x.as_ptr(), y.as_mut_ptr(), i64::MAX / 3), 1);
        assert_eq!(run(std::ptr::null(), y.as_mut_ptr(), 1), 3);
        assert_eq!(run(x.as_ptr(), std::ptr::null_mut(), 1), 3);
        assert!(y.iter().all(|&v| v == 7.0), "nothing written on error");
    }
}

#[test]
fn mlp_library_matches_the_interpreter() {
    check_single_io("examples/mlp.lop", "libmlp.so", "mlp_run", &[1, 3, 64]);
}

#[test]
fn lenet5_library_matches_the_interpreter() {
    check_single_io("examples/lenet5.lop", "liblenet5.so", "lenet5_run", &[1, 3]);
}

#[test]
fn transformer_library_matches_the_interpreter() {
    check_single_io(
        "examples/transformer.lop",
        "libtransformer.so",
        "transformer_run",
        &[1, 2],
    );
}

#[test]
fn one_library_serves_two_threads_at_once() {
    let dir = scratch("threads");
    let path = compile("examples/digits_mlp.lop", &dir, "libdigits_mlp.so");
    let graph = common::load("examples/digits_mlp.lop");
    // SAFETY: as above; the entry point is documented thread-safe (scratch
    // memory is per call) and each thread owns its buffers.
    unsafe {
        let library = libloading::Library::new(&path).unwrap();
        let run: libloading::Symbol<Run> = library.get(b"digits_mlp_run").unwrap();
        let run = *run;
        let handles: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut outputs = Vec::new();
                    for i in 0..50u64 {
                        let batch = 1 + ((t * 50 + i) % 9) as usize;
                        let x = lopper_runtime::random_tensor(vec![batch, 64], t * 1000 + i);
                        let mut y = vec![0.0f32; batch * 10];
                        assert_eq!(run(x.data.as_ptr(), y.as_mut_ptr(), batch as i64), 0);
                        outputs.push((x, y));
                    }
                    outputs
                })
            })
            .collect();
        for h in handles {
            for (x, y) in h.join().unwrap() {
                let batch = x.shape[0];
                let want = lopper_runtime::run_graph(
                    &graph,
                    &HashMap::from([("x".to_string(), x)]),
                    &BTreeMap::new(),
                )
                .unwrap();
                let got = lopper_ir::Tensor::new(vec![batch, 10], y).unwrap();
                common::assert_close("concurrent call", &got, &want[0].1, 1e-4, 1e-5);
            }
        }
    }
}

/// The C client of examples/c classifies the 360 test digits through the
/// compiled library: accuracy 0.9806, and valgrind finds no error or leak.
#[test]
fn c_client_reports_the_accuracy() {
    let dir = scratch("c-client");
    compile("examples/digits_mlp.lop", &dir, "libdigits_mlp.so");
    let client = common::build_c_client(&dir);
    // The weights are inside: the library needs nothing but libc and libm.
    if let Ok(out) = Command::new("readelf")
        .arg("-d")
        .arg(dir.join("libdigits_mlp.so"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert!(!needed.is_empty(), "{text}");
        for line in needed {
            assert!(
                line.contains("[libc.so") || line.contains("[libm.so"),
                "unexpected dependency: {line}"
            );
        }
    }
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
    if Command::new("valgrind").arg("--version").output().is_ok() {
        let out = Command::new("valgrind")
            .args([
                "--leak-check=full",
                "--errors-for-leak-kinds=all",
                "--error-exitcode=9",
                "-q",
            ])
            .arg(&client)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "valgrind: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `lopper run` and `lopper eval` take a compiled library too, checking
/// shapes before the call.
#[test]
fn cli_runs_a_compiled_library() {
    let dir = scratch("cli-library");
    let lib = compile("examples/digits_mlp.lop", &dir, "libdigits_mlp.so");
    let lib = lib.to_str().unwrap();
    let data = root().join("../shared/data/digits/digits.safetensors");
    let (code, out, err) = lopper(&root(), &["eval", lib, "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("accuracy: 0.9806 (353/360)\n"), "{out}");
    let (code, out, err) = lopper(
        &root(),
        &["run", lib, "--input", "x=random:1", "--set", "batch=3"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("probabilities: f32[3, 10]"), "{out}");
    // A wrongly shaped input is refused before the library sees it.
    let (code, _, err) = lopper(
        &root(),
        &[
            "run",
            lib,
            "--input",
            "x=tests/data/ort/mlp_b64.safetensors:input",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("input `x` has shape [64, 784] but the model expects f32[batch,64]"),
        "{err}"
    );
    // A library lopper did not build is refused with a reason.
    std::fs::write(dir.join("libfake.so"), b"not an ELF file").unwrap();
    let (code, _, err) = lopper(&dir, &["run", "libfake.so", "--input", "x=random:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot use `libfake.so` as a lopper library"),
        "{err}"
    );
}
