//! Every pass keeps what a model computes: the interpreter gives the same
//! outputs before and after each pass, on a model built to give each pass
//! something to do (batch_norm to fold, identities to simplify, duplicates
//! to merge, constants to fold); after `lower-to-loops` the loop interpreter
//! runs the module.

mod common;

use lopper_passes::{AnyPass, Instrumentation, Ir, PassManager, PassOptions, PASSES};
use std::collections::{BTreeMap, HashMap};

const MODEL: &str = r#"
model busy {
    input x: f32[batch, 3, 8, 8]
    param w: f32[4, 3, 3, 3] = kaiming(seed = 1)
    param b: f32[4] = uniform(-0.1, 0.1, seed = 2)
    param scale: f32[4] = uniform(0.5, 1.5, seed = 3)
    param shift: f32[4] = normal(0, 0.1, seed = 4)
    param mean: f32[4] = normal(0, 0.1, seed = 5)
    param var: f32[4] = uniform(0.5, 2, seed = 6)
    param fc: f32[5, 64] = normal(0, 0.1, seed = 7)
    param gamma: f32[5] = ones()
    param zero: f32[5] = zeros()
    param counts: f32[3] = [1, 2, 3]
    let c = batch_norm(conv2d(x, w, b, stride = 2, padding = 1), scale, shift, mean, var)
    let t = transpose(transpose(relu(c), perm = [0, 2, 3, 1]), perm = [0, 3, 1, 2])
    let f = reshape(flatten(t), shape = [batch, 64])
    let h = linear(f, fc) * 1 + 0
    let twice = tanh(h) + tanh(h)
    let k = counts * 2
    let unused = exp(x)
    output y = batch_norm(twice, gamma, zero, zero, gamma) * sum(k, axes = [0])
}
"#;

#[test]
fn each_pass_preserves_outputs() {
    let built = lopper_frontend::compile_source(MODEL, std::path::Path::new(""))
        .unwrap_or_else(|d| panic!("{}", lopper_ir::diagnostic::render("busy", MODEL, &d)));
    let x = lopper_runtime::random_tensor(vec![3, 3, 8, 8], 11);
    let feeds = HashMap::from([("x".to_string(), x)]);
    let run =
        |g: &lopper_ir::Graph| lopper_runtime::run_graph(g, &feeds, &BTreeMap::new()).unwrap();
    let want = run(&built);
    for pass in PASSES {
        // Pruning changes the values by design (tests/pruning.rs).
        if pass.name == "prune" {
            continue;
        }
        let mut ir = Ir::Graph(built.clone());
        let instrumentation = Instrumentation {
            verify_each: true,
            ..Default::default()
        };
        // A loop pass runs on the lowered model.
        // Passes that need options (which loop to tile, ...) are covered by
        // tests/schedules.rs and the filetests.
        let pipeline = match (pass.create)(&PassOptions::default()) {
            Ok(AnyPass::Loops(_)) => format!("lower-to-loops,{}", pass.name),
            Ok(_) => pass.name.to_string(),
            Err(_) => continue,
        };
        let (timings, _) = PassManager::new(&pipeline, instrumentation)
            .unwrap()
            .run_ir(&mut ir, &mut std::io::sink())
            .unwrap();
        // Graph passes must find work here; the loop passes' own filetests
        // show theirs (and analyze-sparsity's: this model has no zeros).
        let graph_pass = !pipeline.starts_with("lower-to-loops,");
        if !["shape-infer", "analyze-sparsity"].contains(&pass.name) && graph_pass {
            assert!(
                timings.last().unwrap().changed,
                "`{}` should find work in this model",
                pass.name
            );
        }
        let got = match &ir {
            Ir::Graph(g) => run(g),
            Ir::Loops(m) => lopper_runtime::run_module(m, &feeds, &BTreeMap::new()).unwrap(),
        };
        common::assert_close(pass.name, &got[0].1, &want[0].1, 1e-5, 1e-5);
    }
}
