//! Every op over a range of shapes: symbolic batch 1, 3 and 64, odd sizes
//! (7, 300, 784), strides, padding, dilation and groups, broadcasting,
//! negative axes. Each model runs on the reference interpreter (the oracle),
//! the Cranelift JIT, the shared object `lopper compile` builds, and, when
//! small, the loop interpreter. Tolerance: 1e-4 relative, 1e-5 absolute (f32 with fma
//! against f64 sums).

mod common;

use lopper_backends::cranelift::compile_jit;
use std::collections::{BTreeMap, HashMap};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn jit_and_loops(name: &str, body: &str, batches: &[usize]) {
    let source = format!("model m {{\n {body}\n}}\n");
    let graph =
        lopper_frontend::compile_source(&source, std::path::Path::new("")).unwrap_or_else(|d| {
            panic!(
                "{name}:\n{}",
                lopper_ir::diagnostic::render(name, &source, &d)
            )
        });
    let module = common::lowered(&graph);
    let jit = compile_jit(&module).unwrap_or_else(|e| panic!("{name}: {e}"));
    for &b in batches {
        let inputs = common::random_inputs(&graph, "b", b, 100);
        let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
        let sizes: BTreeMap<String, usize> = module.sizes.iter().map(|s| (s.clone(), b)).collect();
        let got = jit.run(&inputs, &sizes).unwrap();
        for ((out, a), (_, e)) in got.iter().zip(&want) {
            common::assert_close(&format!("{name} b={b} {out} (cranelift)"), a, e, RTOL, ATOL);
        }
        let work: usize = want.iter().map(|(_, t)| t.numel()).sum::<usize>() * 1000;
        if work < 2_000_000 || b == 1 {
            let got = lopper_runtime::run_module(&module, &inputs, &BTreeMap::new()).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(
                    &format!("{name} b={b} {out} (loop interpreter)"),
                    a,
                    e,
                    RTOL,
                    ATOL,
                );
            }
        }
    }
}

#[test]
fn every_op_over_shapes_matches_the_interpreter() {
    for (name, body, batches) in common::SHAPE_CASES {
        jit_and_loops(name, body, batches);
    }
}

/// The same models as shared objects built by `lopper compile`, loaded and
/// called the way `lopper run lib.so` does, at batch 1 and 3.
#[test]
fn shared_objects_match_the_interpreter() {
    let dir = common::scratch("differential-so");
    for (name, body, _) in common::SHAPE_CASES {
        let model = dir.join(format!("{name}.lop"));
        std::fs::write(&model, format!("model m {{\n {body}\n}}\n")).unwrap();
        let lib = dir.join(format!("lib{name}.so"));
        let (code, _, err) = common::lopper(
            &dir,
            &[
                "compile",
                model.to_str().unwrap(),
                "-o",
                lib.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{name}: {err}");
        let shared = lopper_runtime::SharedModel::open(&lib).unwrap();
        let graph = lopper_frontend::load_model(&model).unwrap();
        for b in [1usize, 3] {
            let bound = BTreeMap::from([("b".to_string(), b)]);
            let mut inputs = HashMap::new();
            for (seed, &i) in graph.inputs.iter().enumerate() {
                let shape = graph.node(i).ty.shape.bind(&bound).unwrap();
                inputs.insert(
                    graph.node(i).name.clone(),
                    lopper_runtime::random_tensor(shape, seed as u64 + 7),
                );
            }
            let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
            let got = shared.run(&inputs, &BTreeMap::new()).unwrap();
            for ((out, a), (_, e)) in got.iter().zip(&want) {
                common::assert_close(&format!("{name} b={b} {out} (.so)"), a, e, RTOL, ATOL);
            }
        }
    }
}
