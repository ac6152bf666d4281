//! The command line as a user meets it: help, check, dump with its
//! instrumentation, opt, run and eval.

mod common;

use common::{lopper, root, scratch};

#[test]
fn every_subcommand_has_help() {
    for sub in ["check", "import", "dump", "opt", "run", "eval", "passes"] {
        let (code, out, _) = lopper(&root(), &[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage: lopper"), "{sub} --help:\n{out}");
    }
    let (code, out, _) = lopper(&root(), &["dump", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--print-after-all",
        "--dump-dir",
        "--stop-after",
        "--time-passes",
        "--emit",
    ] {
        assert!(out.contains(flag), "dump --help lacks {flag}");
    }
}

#[test]
fn check_prints_the_summary_table() {
    let (code, out, err) = lopper(&root(), &["check", "examples/lenet5.lop"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("check_lenet5", out);
    let (code, out, _) = lopper(&root(), &["check", "examples/mlp.lop", "--set", "batch=64"]);
    assert_eq!(code, 0);
    // 2·(784·300 + 300·100 + 100·10) MACs plus bias, relu, softmax per row, × 64.
    assert!(out.contains("total: 6 ops, 34.13M FLOPs"), "{out}");
}

#[test]
fn dump_print_after_all_shows_every_pass() {
    let (code, out, err) = lopper(
        &root(),
        &["dump", "examples/lenet5.lop", "--print-after-all"],
    );
    assert_eq!(code, 0, "{err}");
    for pass in [
        "shape-infer",
        "simplify",
        "fold-constants",
        "fold-batchnorm",
        "cse",
        "dce",
        "analyze-sparsity",
    ] {
        assert!(
            err.contains(&format!("IR Dump After {pass} ")),
            "no dump after {pass}"
        );
    }
    assert_eq!(err.matches("graph @lenet5(").count(), 7);
    assert!(out.starts_with("graph @lenet5(%x: f32[batch,1,28,28]) -> (logits: f32[batch,10])"));
}

#[test]
fn print_changed_only_skips_passes_that_did_nothing() {
    let (code, _, err) = lopper(
        &root(),
        &[
            "dump",
            "examples/mlp.lop",
            "--print-after-all",
            "--print-changed-only",
        ],
    );
    assert_eq!(code, 0);
    // Nothing in the mlp is foldable, duplicated or dead.
    assert!(!err.contains("IR Dump After"), "{err}");
    let (_, _, err) = lopper(
        &root(),
        &[
            "dump",
            "examples/mlp.lop",
            "--print-before",
            "dce",
            "--print-after",
            "cse",
        ],
    );
    assert!(err.contains("IR Dump Before dce") && err.contains("IR Dump After cse"));
    assert_eq!(err.matches("IR Dump").count(), 2);
}

#[test]
fn dump_dir_files_reproduce_each_step() {
    let dir = scratch("dump-dir");
    // A conv + batch_norm model so that fold-batchnorm has work to do.
    let source = "model cbn {\n    input x: f32[batch, 2, 6, 6]\n    param w: f32[3, 2, 3, 3] = kaiming(seed = 1)\n    param s: f32[3] = uniform(0.5, 1.5, seed = 2)\n    param b: f32[3] = zeros()\n    param v: f32[3] = ones()\n    output y = batch_norm(conv2d(x, w), s, b, b, v) * 1\n}\n";
    std::fs::write(dir.join("cbn.lop"), source).unwrap();
    let (code, _, err) = lopper(&dir, &["dump", "cbn.lop", "--dump-dir", "dumps"]);
    assert_eq!(code, 0, "{err}");
    let files = common::sorted_files(&dir.join("dumps"));
    assert_eq!(
        files,
        [
            "00-input.gir",
            "01-shape-infer.gir",
            "02-simplify.gir",
            "03-fold-constants.gir",
            "04-fold-batchnorm.gir",
            "05-cse.gir",
            "06-dce.gir",
            "07-analyze-sparsity.gir"
        ]
    );
    // Each header is a command; running it gives the same IR as the dump.
    for f in &files[1..] {
        let text = std::fs::read_to_string(dir.join("dumps").join(f)).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        let command = header.strip_prefix("// lopper ").unwrap();
        let args: Vec<&str> = command.split(' ').map(|a| a.trim_matches('\'')).collect();
        let (code, out, err) = lopper(&dir, &args);
        assert_eq!(code, 0, "{command}: {err}");
        assert_eq!(out, body, "{f} is not reproduced by `{command}`");
    }
    let folded = std::fs::read_to_string(dir.join("dumps/04-fold-batchnorm.gir")).unwrap();
    assert!(!folded.contains("batch_norm"), "{folded}");
}

#[test]
fn stop_after_and_time_passes() {
    let (code, out, err) = lopper(
        &root(),
        &[
            "dump",
            "examples/transformer.lop",
            "--stop-after",
            "simplify",
            "--time-passes",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Pass execution timing report"));
    assert!(
        err.contains("shape-infer") && err.contains("simplify") && !err.contains("  dce"),
        "{err}"
    );
    assert!(
        out.contains("%8 = param {data = [0.17677669]} : f32[]"),
        "{out}"
    );
}

#[test]
fn opt_round_trips_and_emits_dot() {
    let dir = scratch("opt");
    let (code, gir, _) = lopper(
        &root(),
        &[
            "dump",
            "examples/lenet5.lop",
            "-o",
            dir.join("l.gir").to_str().unwrap(),
        ],
    );
    assert_eq!((code, gir.as_str()), (0, ""));
    let text = std::fs::read_to_string(dir.join("l.gir")).unwrap();
    let (code, out, err) = lopper(&root(), &["opt", dir.join("l.gir").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, text);
    let (code, dot, _) = lopper(
        &root(),
        &["opt", dir.join("l.gir").to_str().unwrap(), "--emit", "dot"],
    );
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph \"lenet5\" {"));
    assert!(dot.contains("conv2d") && dot.contains("shape=doubleoctagon"));
}

#[test]
fn run_writes_outputs_and_eval_reports_accuracy() {
    let dir = scratch("run");
    let out_file = dir.join("y.safetensors");
    let (code, out, err) = lopper(
        &root(),
        &[
            "run",
            "examples/mlp.lop",
            "--input",
            "x=random:7",
            "--set",
            "batch=3",
            "--output",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("y: f32[3, 10]"), "{out}");
    let y = lopper_runtime::read_tensor_file(&out_file, Some("y")).unwrap();
    assert_eq!(y.shape, [3, 10]);
    for row in y.values.chunks(10) {
        assert!(
            (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "softmax rows sum to 1"
        );
    }
    let (code, out, err) = lopper(
        &root(),
        &[
            "run",
            "examples/mlp.lop",
            "--input",
            "x=tests/data/ort/mlp_b64.safetensors:input",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("y: f32[64, 10]"));
    let (code, out, err) = lopper(
        &root(),
        &[
            "eval",
            "examples/digits_mlp.lop",
            "--data",
            "../shared/data/digits/digits.safetensors",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("accuracy: 0.9806 (353/360)\n"), "{out}");
}

#[test]
fn lowering_continues_the_dumps_and_runs() {
    let dir = scratch("lower");
    let model = root().join("examples/lenet5.lop");
    let (code, out, err) = lopper(
        &dir,
        &[
            "dump",
            model.to_str().unwrap(),
            "--emit",
            "lir",
            "--dump-dir",
            "d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("module @lenet5(batch) {"));
    let last = std::fs::read_to_string(dir.join("d/12-plan-memory.lir")).unwrap();
    let (header, body) = last.split_once('\n').unwrap();
    assert_eq!(
        header,
        "// lopper opt d/11-hoist.lir --passes 'plan-memory'"
    );
    assert_eq!(body, out);
    // The loop IR runs through the loop interpreter and agrees with the graph.
    std::fs::write(dir.join("l.lir"), &out).unwrap();
    let args = ["--input", "x=random:3", "--set", "batch=2"];
    let (code, _, err) = lopper(
        &dir,
        &[
            &["run", "l.lir", "--output", "loops.safetensors"][..],
            &args,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = lopper(
        &dir,
        &[
            &[
                "run",
                model.to_str().unwrap(),
                "--output",
                "graph.safetensors",
            ][..],
            &args,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let read = |f: &str| {
        common::tensor(lopper_runtime::read_tensor_file(&dir.join(f), Some("logits")).unwrap())
    };
    common::assert_close(
        "lenet5 via loops",
        &read("loops.safetensors"),
        &read("graph.safetensors"),
        1e-4,
        1e-5,
    );
    // Graph passes do not apply to loop IR.
    let (code, _, err) = lopper(&dir, &["opt", "l.lir", "--passes", "cse"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not work on the loop IR"), "{err}");
}

/// `compile --dump-dir` leaves one numbered file per stage, parse to CLIF,
/// and the last one is reproduced by the command in its first line.
#[test]
fn compile_never_writes_over_its_input() {
    let dir = scratch("compile-clobber");
    let lir = "module @m() {\n  buffer %x: in f32[2]\n  buffer %y: out f32[2]\n\n  kernel @k(%x, %y) {\n    for %i in 0..2 {\n      %y[%i] = %x[%i]\n    }\n  }\n}\n";
    std::fs::write(dir.join("m.lir"), lir).unwrap();
    let (code, _, err) = lopper(
        &dir,
        &["compile", "m.lir", "--emit", "lir", "-o", "libm.so"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("would be written over the input"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("m.lir")).unwrap(), lir);
    let (code, _, err) = lopper(
        &dir,
        &["compile", "m.lir", "--emit", "lir", "-o", "out/libm.so"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("out/m.lir").exists());
}

#[test]
fn compile_dumps_every_stage_through_clif() {
    let dir = scratch("compile-dumps");
    let model = root().join("examples/lenet5.lop");
    let (code, out, err) = lopper(
        &dir,
        &[
            "compile",
            model.to_str().unwrap(),
            "-o",
            "out/liblenet5.so",
            "--dump-dir",
            "d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("entry point `lenet5_run`"));
    assert!(dir.join("out/lenet5.h").exists());
    let files = common::sorted_files(&dir.join("d"));
    assert_eq!(files.len(), 14, "{files:?}");
    assert_eq!(files[8], "08-lower-to-loops.lir");
    assert_eq!(files[9], "09-auto-schedule.lir");
    assert_eq!(files[12], "12-plan-memory.lir");
    assert_eq!(files[13], "13-cranelift.clif");
    let clif = std::fs::read_to_string(dir.join("d/13-cranelift.clif")).unwrap();
    let (header, body) = clif.split_once('\n').unwrap();
    assert_eq!(header, "; lopper dump d/12-plan-memory.lir --emit clif");
    let (code, again, err) = lopper(&dir, &["dump", "d/12-plan-memory.lir", "--emit", "clif"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, body);
    assert!(body.contains("; kernel @conv2d_relu_2") && body.contains("; entry point lenet5_run"));
}

/// `compile --emit` writes what it is asked for; the IR files parse back.
#[test]
fn compile_emits_the_requested_files() {
    let dir = scratch("compile-emit");
    let model = root().join("examples/mlp.lop");
    let (code, out, err) = lopper(
        &dir,
        &[
            "compile",
            model.to_str().unwrap(),
            "-o",
            "libmlp.so",
            "--emit",
            "obj,gir,lir,clif",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("wrote mlp.gir, mlp.lir, mlp.clif, mlp.o"),
        "{out}"
    );
    assert!(!dir.join("libmlp.so").exists() && !dir.join("mlp.h").exists());
    let gir = std::fs::read_to_string(dir.join("mlp.gir")).unwrap();
    assert_eq!(
        lopper_ir::graph::print_gir(&lopper_ir::graph::parse_gir(&gir).unwrap()),
        gir
    );
    let lir = std::fs::read_to_string(dir.join("mlp.lir")).unwrap();
    assert_eq!(
        lopper_ir::loops::print_lir(&lopper_ir::loops::parse_lir(&lir).unwrap()),
        lir
    );
    assert!(std::fs::read(dir.join("mlp.o"))
        .unwrap()
        .starts_with(b"\x7fELF"));
    let (code, _, err) = lopper(
        &dir,
        &[
            "compile",
            model.to_str().unwrap(),
            "-o",
            "libmlp.so",
            "--emit",
            "so,exe",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'exe'"), "{err}");
}

/// Output piped into a reader that stops early (`lopper dump | head`) ends
/// the process quietly, without a panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(["dump", "examples/transformer.lop"])
        .current_dir(common::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// `--bounds-check` code gives the same answers (it only adds checks).
#[test]
fn bounds_checked_code_gives_the_same_outputs() {
    let args = [
        "run",
        "examples/lenet5.lop",
        "--input",
        "x=random:3",
        "--set",
        "batch=2",
    ];
    let (code, plain, err) = lopper(&root(), &args);
    assert_eq!(code, 0, "{err}");
    let (code, checked, err) = lopper(&root(), &[&args[..], &["--bounds-check"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(plain, checked);
    let dir = scratch("bounds-check");
    let lib = dir.join("liblenet5.so");
    let (code, _, err) = lopper(
        &root(),
        &[
            "compile",
            "examples/lenet5.lop",
            "--bounds-check",
            "-o",
            lib.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, from_library, err) = lopper(
        &root(),
        &[
            "run",
            lib.to_str().unwrap(),
            "--input",
            "x=random:3",
            "--set",
            "batch=2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(plain, from_library);
}

/// `--target-cpu` compiles for another CPU: code for plain x86-64 (no AVX,
/// no FMA) gives the interpreter's outputs; an unknown name is refused with
/// the known ones.
#[test]
fn target_cpu_selects_the_instruction_set() {
    let dir = scratch("target-cpu");
    let run = |extra: &[&str], out: &str| {
        let path = dir.join(out);
        let mut args = vec![
            "run",
            "examples/lenet5.lop",
            "--input",
            "x=random:3",
            "--set",
            "batch=2",
            "--output",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = lopper(&root(), &args);
        assert_eq!(code, 0, "{extra:?}: {err}");
        let raw = lopper_runtime::read_tensor_file(&path, Some("logits")).unwrap();
        common::tensor(raw)
    };
    let want = run(&["--backend", "interpreter"], "want.safetensors");
    for cpu in ["x86-64", "x86-64-v3", "native"] {
        let got = run(&["--target-cpu", cpu], &format!("{cpu}.safetensors"));
        common::assert_close(cpu, &got, &want, 1e-4, 1e-5);
    }
    let (code, _, err) = lopper(
        &root(),
        &["compile", "examples/mlp.lop", "--target-cpu", "pentium9"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown CPU `pentium9`") && err.contains("skylake-avx512"),
        "{err}"
    );
}

/// `--l2-cache` tells the schedule chooser the cache it plans for: a small
/// one gives narrower packed panels (and the same outputs).
#[test]
fn l2_cache_changes_the_schedule_not_the_result() {
    let dir = scratch("l2-cache");
    let model = dir.join("gemm.lop");
    std::fs::write(
        &model,
        "model gemm {\n    input a: f32[64, 1024]\n    param b: f32[1024, 96] = normal(seed = 1)\n    output c = matmul(a, b)\n}\n",
    )
    .unwrap();
    let lir = |cache: &str| {
        let out = dir.join(format!("gemm-{cache}.lir"));
        let (code, _, err) = lopper(
            &dir,
            &[
                "dump",
                "gemm.lop",
                "--emit",
                "lir",
                "--l2-cache",
                cache,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        std::fs::read_to_string(out).unwrap()
    };
    // Cranelift computes a GEMM with constant rows two rows at a time, 4
    // vectors wide: a panel of 1024 x 16 floats is 64 KiB; with 32 KiB of
    // cache the chooser packs 1024 x 4 (16 KiB, within half of it).
    assert!(lir("2M").contains("f32[6,1024,16]"));
    assert!(lir("32K").contains("f32[24,1024,4]"));
    let run = |cache: &str| {
        let (code, out, err) = lopper(
            &dir,
            &[
                "run",
                "gemm.lop",
                "--input",
                "a=random:1",
                "--l2-cache",
                cache,
            ],
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    // The same numbers but for the order of the additions (the narrow
    // tiles of the small cache split their accumulators).
    let numbers = |text: String| -> Vec<f64> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
            .filter_map(|t| t.parse().ok())
            .collect()
    };
    let (big, small) = (numbers(run("2M")), numbers(run("32K")));
    assert_eq!(big.len(), small.len());
    for (a, b) in big.iter().zip(&small) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} against {b}");
    }
    let (code, _, err) = lopper(&dir, &["run", "gemm.lop", "--l2-cache", "2Q"]);
    assert_eq!(code, 2);
    assert!(err.contains("`2Q` is not a size"), "{err}");
}

/// Cranelift's loads: `readonly can_move` (free to sit by their use) only
/// for read-only memory whose address moves with the innermost loop, never
/// for a load inside an `if` (it could move above the test that keeps it
/// in bounds).
#[test]
fn loads_move_only_within_their_loop() {
    let dir = scratch("movable-loads");
    let model = root().join("tests/data/lir/movable-loads.lir");
    let (code, out, err) = lopper(&dir, &["dump", model.to_str().unwrap(), "--emit", "clif"]);
    assert_eq!(code, 0, "{err}");
    let (moves, guarded) = out.split_once("; kernel @guarded").expect("two kernels");
    assert!(
        moves.contains("load.f32x4 notrap readonly can_move"),
        "{moves}"
    );
    assert!(guarded.contains("load.f32x4 notrap v"), "{guarded}");
    assert!(!guarded.contains("can_move"), "{guarded}");
}
