//! Pruning and sparse kernels.
//!
//! Every pruning method on models with odd widths, a rank-3 input, the
//! digits MLP and LeNet-5; each pruned graph compiled with every sparse
//! format that applies (at -O0 and -O2, symbolic batch 1 to 13) on the
//! Cranelift JIT against the reference interpreter on the same pruned
//! weights. What each method leaves is checked against its definition
//! (exact counts, N:M groups, whole blocks, shrunken shapes), and the
//! weights `lopper prune` writes load back and give the same outputs.

mod common;

use common::{lopper, root, scratch};
use lopper_ir::graph::sparsity::{block_occupancy, conforms_to_nm, density};
use lopper_ir::{Graph, Op, Tensor};
use std::collections::BTreeMap;

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

const METHODS: &[(&str, &str)] = &[
    ("magnitude 90%", "prune{sparsity=0.9}"),
    ("magnitude global 80%", "prune{sparsity=0.8,scope=global}"),
    ("2:4", "prune{method=nm}"),
    ("1:8", "prune{method=nm,n=1,m=8}"),
    ("block 4x4 75%", "prune{method=block,sparsity=0.75}"),
    (
        "block 2x8 50%",
        "prune{method=block,block=2x8,sparsity=0.5}",
    ),
    ("structured 50%", "prune{method=structured,sparsity=0.5}"),
];

/// Formats forced with `analyze-sparsity{format=...}`; `auto` is the cost
/// model's choice. Tuned for one row (the default) the sparse kernels run
/// one batch row at a time; with `rows=8` along the batch, over transposed
/// activations, CSR and N:M also by panels of 8 columns (of 37, 29, 19 and
/// 64: the last panel narrower), which only LLVM's cost model picks by
/// itself.
const FORMATS: &[&str] = &[
    "auto",
    "dense",
    "csr",
    "bsr",
    "bsr3x5",
    "nm",
    "csr,rows=8",
    "csr,panel=8,rows=8",
    "bsr,rows=8",
    "bsr3x5,rows=8",
    "nm,rows=8",
    "nm,panel=8,rows=8",
    "sell",
    "sell,rows=8",
];

fn model(body: &str) -> Graph {
    let source = format!("model m {{\n{body}\n}}\n");
    lopper_frontend::compile_source(&source, std::path::Path::new(""))
        .unwrap_or_else(|d| panic!("{}", lopper_ir::diagnostic::render("m", &source, &d)))
}

/// Odd widths, a bias-free layer, a rank-3 input, a weight of zeros.
fn test_models() -> Vec<(&'static str, Graph)> {
    vec![
        (
            "odd widths",
            model(
                "input x: f32[batch, 37]
                 param w1: f32[29, 37] = normal(0, 1, seed = 1)
                 param b1: f32[29] = normal(0, 1, seed = 2)
                 param w2: f32[11, 29] = normal(0, 1, seed = 3)
                 param w3: f32[3, 11] = normal(0, 1, seed = 4)
                 let h = relu(linear(x, w1, b1))
                 let g = tanh(linear(h, w2))
                 output y = linear(g, w3)",
            ),
        ),
        (
            "rank 3",
            model(
                "input x: f32[batch, 3, 19]
                 param w: f32[13, 19] = normal(0, 1, seed = 5)
                 param b: f32[13] = normal(0, 1, seed = 6)
                 param v: f32[7, 13] = normal(0, 1, seed = 7)
                 output y = linear(relu(linear(x, w, b)), v)",
            ),
        ),
        ("digits mlp", common::load("examples/digits_mlp.lop")),
        (
            "all-zero weight",
            model(
                "input x: f32[batch, 6]
                 param w: f32[4, 6] = zeros()
                 param b: f32[4] = ones()
                 output y = linear(x, w, b)",
            ),
        ),
    ]
}

fn run_pipeline(g: &Graph, pipeline: &str) -> Result<lopper_passes::Ir, String> {
    let instrumentation = lopper_passes::Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    let mut pm = lopper_passes::PassManager::new(pipeline, instrumentation)?;
    let mut ir = lopper_passes::Ir::Graph(g.clone());
    pm.run_ir(&mut ir, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    Ok(ir)
}

fn pruned(g: &Graph, method: &str) -> Graph {
    match run_pipeline(g, &format!("shape-infer,{method}")) {
        Ok(lopper_passes::Ir::Graph(g)) => g,
        other => panic!("{method}: {:?}", other.err()),
    }
}

fn weights(g: &Graph) -> BTreeMap<String, Tensor> {
    g.graph
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::Param(p) => Some((n.name.clone(), (*p.data).clone())),
            _ => None,
        })
        .collect()
}

/// Compiles `g` with `format` at `level`; `None` when the format does not
/// apply (N:M forced on a weight that is not N:M), which must say so.
fn compiled(g: &Graph, format: &str, level: u8) -> Option<lopper_ir::loops::Module> {
    let pipeline = format!(
        "analyze-sparsity{{format={format}}},{}",
        lopper_passes::loop_pipeline(level)
    );
    match run_pipeline(g, &pipeline) {
        Ok(lopper_passes::Ir::Loops(m)) => Some(m),
        Ok(_) => unreachable!("the pipeline lowers"),
        Err(e) if format.starts_with("nm") => {
            assert!(e.contains("not N:M sparse"), "{e}");
            None
        }
        Err(e) => panic!("{format} -O{level}: {e}"),
    }
}

#[test]
fn every_method_and_format_matches_the_interpreter() {
    let mut runs = 0;
    for (name, graph) in test_models() {
        for (method, spec) in METHODS {
            let g = pruned(&graph, spec);
            for format in FORMATS {
                for level in [0, 2] {
                    let Some(module) = compiled(&g, format, level) else {
                        continue;
                    };
                    let text = lopper_ir::loops::print_lir(&module);
                    if *format != "dense" && *format != "auto" && !method.starts_with("structured")
                    {
                        assert!(
                            text.contains("_linear"),
                            "{name} {method} {format}: no sparse kernel"
                        );
                    }
                    let jit = lopper_backends::cranelift::compile_jit(&module)
                        .unwrap_or_else(|e| panic!("{name} {method} {format}: {e}"));
                    for b in [1, 5, 8, 13] {
                        let x = common::random_inputs(&g, "batch", b, 7);
                        let want = lopper_runtime::run_graph(&g, &x, &BTreeMap::new()).unwrap();
                        let sizes = BTreeMap::from([("batch".to_string(), b)]);
                        let got = jit.run(&x, &sizes).unwrap();
                        for ((out, a), (_, e)) in got.iter().zip(&want) {
                            let what =
                                format!("{name}, {method}, {format} -O{level}, b={b}, {out}");
                            common::assert_close(&what, a, e, RTOL, ATOL);
                        }
                        runs += 1;
                    }
                }
            }
        }
    }
    assert!(runs > 300, "only {runs} runs");
}

/// Pruned weights and the CSR or N:M kernel forced on them, with and
/// without panels.
const SPARSE_CASES: [(&str, &str); 4] = [
    ("prune{sparsity=0.8}", "csr"),
    ("prune{sparsity=0.5}", "csr,panel=8"),
    ("prune{method=nm}", "nm"),
    ("prune{method=nm}", "nm,panel=8"),
];

#[test]
fn the_loop_interpreter_runs_the_sparse_kernels_too() {
    let graph = &test_models()[0].1;
    // One batch row at a time (tuned for one row) and along the batch.
    for rows in ["", ",rows=8"] {
        for (method, format) in SPARSE_CASES
            .into_iter()
            .chain([("prune{sparsity=0.8}", "sell")])
        {
            let g = pruned(graph, method);
            let format = format!("{format}{rows}");
            let module = compiled(&g, &format, 2).unwrap();
            let x = common::random_inputs(&g, "batch", 6, 7);
            let want = lopper_runtime::run_graph(&g, &x, &BTreeMap::new()).unwrap();
            let got = lopper_runtime::run_module(&module, &x, &BTreeMap::new()).unwrap();
            common::assert_close(&format, &got[0].1, &want[0].1, RTOL, ATOL);
        }
    }
}

/// A batch on Cranelift (`rows=64`): each CSR or N:M group's slots into
/// one accumulator, the batch in tiles of 8 vectors, then of one, then
/// scalar rows; with and without panels, on the JIT and the loop
/// interpreter, at batches that leave each kind of remainder.
#[test]
fn wide_batch_tiles_match_the_interpreter() {
    let graph = &test_models()[0].1;
    for (method, format) in SPARSE_CASES {
        let g = pruned(graph, method);
        let module = compiled(&g, &format!("{format},lanes=4,rows=64"), 2).unwrap();
        let text = lopper_ir::loops::print_lir(&module);
        assert!(
            text.contains("%acc0.0: f32x4") && !text.contains("%acc1"),
            "{format}: one accumulator per group"
        );
        let jit = lopper_backends::cranelift::compile_jit(&module).unwrap();
        for b in [1, 3, 32, 37, 70] {
            let x = common::random_inputs(&g, "batch", b, 7);
            let want = lopper_runtime::run_graph(&g, &x, &BTreeMap::new()).unwrap();
            let sizes = BTreeMap::from([("batch".to_string(), b)]);
            let got = jit.run(&x, &sizes).unwrap();
            common::assert_close(
                &format!("{format} b={b}"),
                &got[0].1,
                &want[0].1,
                RTOL,
                ATOL,
            );
            if b == 37 {
                let got = lopper_runtime::run_module(&module, &x, &BTreeMap::new()).unwrap();
                common::assert_close(format, &got[0].1, &want[0].1, RTOL, ATOL);
            }
        }
    }
}

#[test]
fn lenet5_pruned_every_way_matches_the_interpreter() {
    let graph = common::load("examples/lenet5.lop");
    for (method, spec) in METHODS {
        let g = pruned(&graph, spec);
        let module = common::compiled_at(&g, 2);
        let jit = lopper_backends::cranelift::compile_jit(&module).unwrap();
        for b in [1, 3] {
            let x = common::random_inputs(&g, "batch", b, 7);
            let want = lopper_runtime::run_graph(&g, &x, &BTreeMap::new()).unwrap();
            let got = jit
                .run(&x, &BTreeMap::from([("batch".to_string(), b)]))
                .unwrap();
            common::assert_close(
                &format!("lenet5 {method} b={b}"),
                &got[0].1,
                &want[0].1,
                RTOL,
                ATOL,
            );
        }
    }
}

#[test]
fn each_method_leaves_what_it_promises() {
    let graph = common::load("examples/mlp.lop");
    let before = weights(&graph);
    let count_zeros = |t: &Tensor| t.data.iter().filter(|&&v| v == 0.0).count();
    // Per layer: exactly round(0.9 n) zeros in each weight, biases intact.
    let w = weights(&pruned(&graph, "prune{sparsity=0.9}"));
    for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
        let n = w[name].data.len();
        assert_eq!(
            count_zeros(&w[name]),
            (0.9 * n as f64).round() as usize,
            "{name}"
        );
        // The survivors are the largest: none smaller than any removed.
        let kept_min = w[name]
            .data
            .iter()
            .filter(|v| **v != 0.0)
            .fold(f32::INFINITY, |m, v| m.min(v.abs()));
        let removed_max = before[name]
            .data
            .iter()
            .zip(&w[name].data)
            .filter(|(_, a)| **a == 0.0)
            .fold(0.0f32, |m, (b, _)| m.max(b.abs()));
        assert!(
            removed_max <= kept_min,
            "{name}: {removed_max} > {kept_min}"
        );
    }
    assert_eq!(w["fc1.bias"], before["fc1.bias"]);
    // Per-layer sparsity and exclusion.
    let w = weights(&pruned(
        &graph,
        "prune{sparsity=0.5,layer-sparsity=[fc1.weight:0.95],exclude=[fc3.*]}",
    ));
    assert!((density(&w["fc1.weight"]) - 0.05).abs() < 1e-3);
    assert!((density(&w["fc2.weight"]) - 0.5).abs() < 1e-3);
    assert_eq!(w["fc3.weight"], before["fc3.weight"]);
    // Global: 80% of all weights overall, unevenly per layer.
    let w = weights(&pruned(&graph, "prune{sparsity=0.8,scope=global}"));
    let total: usize = ["fc1.weight", "fc2.weight", "fc3.weight"]
        .iter()
        .map(|n| count_zeros(&w[*n]))
        .sum();
    assert_eq!(total, (0.8 * 266_200f64).round() as usize);
    // N:M along the reduction.
    let w = weights(&pruned(&graph, "prune{method=nm,n=1,m=4}"));
    assert!(conforms_to_nm(&w["fc1.weight"], 1, 4));
    assert!(!conforms_to_nm(&before["fc1.weight"], 3, 4));
    assert!((density(&w["fc1.weight"]) - 0.25).abs() < 1e-9);
    // Blocks: a quarter of the 4x4 blocks left, each whole.
    let w = weights(&pruned(&graph, "prune{method=block,sparsity=0.75}"));
    let t = &w["fc1.weight"];
    assert!((block_occupancy(t, 4, 4) - 0.25).abs() < 0.01);
    assert!((density(t) - block_occupancy(t, 4, 4)).abs() < 0.01);
    // Structured: smaller dense layers, the last one whole.
    let g = pruned(&graph, "prune{method=structured,sparsity=0.5}");
    let w = weights(&g);
    assert_eq!(w["fc1.weight"].shape, vec![150, 784]);
    assert_eq!(w["fc1.bias"].shape, vec![150]);
    assert_eq!(w["fc2.weight"].shape, vec![50, 150]);
    assert_eq!(w["fc3.weight"].shape, vec![10, 50]);
    assert_eq!(density(&w["fc1.weight"]), 1.0);
}

#[test]
fn pruned_weights_load_back_and_give_the_same_outputs() {
    let dir = scratch("pruning-cli");
    let model = root().join("examples/digits_mlp.lop");
    let model = model.to_str().unwrap();
    for (args, spec) in [
        (
            vec!["--sparsity", "0.9", "--scope", "global"],
            "prune{method=magnitude,sparsity=0.9,scope=global}",
        ),
        (
            vec!["--method", "structured", "--sparsity", "0.5"],
            "prune{method=structured,sparsity=0.5}",
        ),
    ] {
        let out = dir.join("pruned.safetensors");
        let mut cli = vec!["prune", model, "-o", out.to_str().unwrap(), "--report"];
        cli.extend(args.iter().copied());
        let (code, stdout, err) = lopper(&dir, &cli);
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains("%fc1.weight"), "{stdout}");
        let expected = pruned(&common::load("examples/digits_mlp.lop"), spec);
        // The file holds the pruned values under the original names.
        for (name, t) in weights(&expected) {
            let raw = common::read(out.to_str().unwrap(), &name);
            assert_eq!(common::tensor(raw), t, "{name}");
        }
        // A model reading them (the rewritten one for new shapes) runs the same.
        let reader = if spec.contains("structured") {
            dir.join("pruned.lop")
        } else {
            let text = std::fs::read_to_string(root().join("examples/digits_mlp.lop")).unwrap();
            let text = text.replace("\"digits_mlp.safetensors\"", "\"pruned.safetensors\"");
            std::fs::write(dir.join("reader.lop"), text).unwrap();
            dir.join("reader.lop")
        };
        let reloaded =
            lopper_frontend::load_model(&reader).unwrap_or_else(|e| panic!("{}", e.render()));
        let x = common::random_inputs(&expected, "batch", 4, 7);
        let want = lopper_runtime::run_graph(&expected, &x, &BTreeMap::new()).unwrap();
        let got = lopper_runtime::run_graph(&reloaded, &x, &BTreeMap::new()).unwrap();
        assert_eq!(got[0].1, want[0].1, "{spec}");
    }
}

#[test]
fn compile_prune_writes_a_sparse_library_with_the_same_answers() {
    let dir = scratch("pruning-compile");
    let model = root().join("examples/digits_mlp.lop");
    let (code, _, err) = lopper(
        &dir,
        &[
            "compile",
            model.to_str().unwrap(),
            "--prune",
            "method=magnitude,sparsity=0.9",
            "--tune-batch",
            "64",
            "--emit",
            "so,lir",
            "-o",
            "libpruned.so",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lir = std::fs::read_to_string(dir.join("pruned.lir")).unwrap();
    assert!(
        lir.contains("csr_linear"),
        "the cost model picks CSR at 90%"
    );
    let expected = pruned(
        &common::load("examples/digits_mlp.lop"),
        "prune{sparsity=0.9}",
    );
    let shared = lopper_runtime::SharedModel::open(&dir.join("libpruned.so")).unwrap();
    let x = common::random_inputs(&expected, "batch", 3, 7);
    let want = lopper_runtime::run_graph(&expected, &x, &BTreeMap::new()).unwrap();
    let got = shared
        .run(&x, &BTreeMap::from([("batch".to_string(), 3)]))
        .unwrap();
    common::assert_close("libpruned.so", &got[0].1, &want[0].1, RTOL, ATOL);
}

/// The cost model's choices on LeNet-300-100's layers, where the
/// measurements behind it were made (docs/pruning.md).
#[test]
fn the_cost_model_chooses_by_density_pattern_batch_and_backend() {
    let graph = common::load("examples/mlp.lop");
    let choice = |prune: &str, lanes: u32, rows: usize| -> Vec<String> {
        let g = pruned(&graph, prune);
        let costs = lopper_passes::sparse_cost::relative_costs(lanes, rows);
        lopper_passes::analyze_sparsity::analyze(
            &g,
            lopper_passes::sparse_cost::Forced::Auto,
            &costs,
        )
        .unwrap()
        .into_iter()
        .map(|r| r.choice.format.to_string())
        .collect()
    };
    // fc1, fc2, fc3 on Cranelift.
    assert_eq!(choice("prune{sparsity=0.95}", 4, 1)[0], "csr");
    assert_eq!(choice("prune{sparsity=0.7}", 4, 1)[0], "dense");
    assert_eq!(choice("prune{sparsity=0.7}", 4, 64)[0], "csr");
    assert_eq!(
        choice("prune{method=block,sparsity=0.9}", 4, 64)[0],
        "bsr4x4"
    );
    // A batch of 64 on Cranelift: one accumulator per group, tiles of 8
    // vectors; 2:4 takes the N:M kernel (fc1 497.5 against 800.5 µs
    // dense), 4x4 blocks at 75% BSR (237.6 against 277.7 µs with CSR).
    assert_eq!(choice("prune{method=nm}", 4, 64)[0], "2:4");
    assert_eq!(
        choice("prune{method=block,block=4x4,sparsity=0.75}", 4, 64)[0],
        "bsr4x4"
    );
    assert_eq!(choice("prune{sparsity=0.5}", 4, 64)[0], "csr");
    // Fewer rows than a wide tile: four accumulators, the old costs.
    assert_eq!(choice("prune{method=nm}", 4, 16)[0], "dense");
    // LLVM, one row: sliced ELLPACK in slices of 16 rows from 50% (fc1
    // 8.2 against 10.9 µs dense), 2:4 (6.9 against 10.2 µs) and blocks;
    // 10% stays dense (at 30% the two tie: 10.7-10.9 against 10.2-11.4
    // µs).
    assert_eq!(choice("prune{sparsity=0.5}", 16, 1)[0], "sell16");
    assert_eq!(choice("prune{sparsity=0.1}", 16, 1)[0], "dense");
    // fc3 (10 x 100) is one slice, mostly padding: dense.
    assert_eq!(
        choice("prune{method=nm}", 16, 1),
        ["sell16", "sell16", "dense"]
    );
    assert_eq!(
        choice("prune{method=block,sparsity=0.9}", 16, 1)[0],
        "sell16"
    );
    // Cranelift, one row: its 4-lane slices lose to CSR at 95%.
    assert_eq!(choice("prune{sparsity=0.95}", 4, 1)[1], "csr");
    // For a batch, CSR by panels in tiles of four vectors pays below about
    // 60% dense (fc1 at 50%: 172 against 201.5 µs), and N:M for 2:4 (166
    // µs).
    assert_eq!(choice("prune{sparsity=0.7}", 16, 64)[0], "csr");
    assert_eq!(choice("prune{sparsity=0.5}", 16, 64)[0], "csr");
    assert_eq!(choice("prune{sparsity=0.3}", 16, 64)[0], "dense");
    assert_eq!(choice("prune{method=nm}", 16, 64)[0], "2:4");
    assert_eq!(choice("prune{sparsity=0.9}", 16, 64)[0], "csr");
}

#[test]
fn bad_prune_options_are_clear_errors() {
    let dir = scratch("pruning-errors");
    let model = root().join("examples/mlp.lop");
    let model = model.to_str().unwrap();
    // A folder cannot be made inside a file.
    let under_a_file = format!("{model}/w.safetensors");
    for (args, message) in [
        (vec!["prune", model, "--sparsity", "1.5"], "fraction"),
        (
            vec!["prune", model, "--method", "lottery"],
            "unknown method",
        ),
        (vec!["prune", model, "--method", "nm", "--n", "4"], "n < m"),
        (
            vec!["prune", model, "--backend", "interpreter"],
            "not the interpreter",
        ),
        (
            vec!["prune", model, "--layer-sparsity", "fc9.weight:0.5"],
            "not a selected weight",
        ),
        (
            vec!["check", model, "--sparse", "csr"],
            "unexpected argument",
        ),
        (
            vec![
                "run",
                model,
                "--sparse",
                "coo",
                "--input",
                "x=random:1",
                "--set",
                "batch=1",
            ],
            "unknown sparse format",
        ),
        (
            vec![
                "run",
                model,
                "--sparse",
                "nm",
                "--input",
                "x=random:1",
                "--set",
                "batch=1",
            ],
            "not N:M sparse",
        ),
        (
            vec!["prune", model, "-o", &under_a_file],
            "cannot create the folder",
        ),
    ] {
        let (code, _, err) = lopper(&dir, &args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Structured pruning of m.gir into m.safetensors would write m.gir
    // again: refused before anything is written.
    let (code, gir, _) = lopper(&dir, &["dump", model, "--stop-after", "shape-infer"]);
    assert_eq!(code, 0);
    std::fs::write(dir.join("m.gir"), gir).unwrap();
    let args = [
        "prune",
        "m.gir",
        "--method",
        "structured",
        "-o",
        "m.safetensors",
    ];
    let (code, _, err) = lopper(&dir, &args);
    assert_ne!(code, 0);
    assert!(err.contains("would overwrite `m.gir`"), "{err}");
    assert!(!dir.join("m.safetensors").exists());
}
