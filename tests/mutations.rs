//! No input makes lopper panic: thousands of seeded mutations of the
//! example models and filetests (characters dropped, inserted or replaced,
//! lines dropped, duplicated or swapped, numbers made huge or negative) go
//! through the parser, builder, verifier, every graph pass, lowering and,
//! when they still build and are small, both interpreters. Each must end in a result or
//! an error. A failure prints the seed and the mutated text.

use lopper_ir::graph::param::SplitMix64;
use lopper_ir::{Dim, Graph};
use lopper_passes::{Instrumentation, PassManager, DEFAULT_PIPELINE};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const MUTANTS_PER_FILE: u64 = 150;
const INTERESTING: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    "=",
    ":",
    "%",
    "@",
    "-",
    "+",
    "*",
    "/",
    ".",
    "\n",
    "\"",
    " ",
    "0",
    "1",
    "-1",
    "99999999999",
    "18446744073709551615",
    "batch",
    "relu",
    "x",
    "f32",
    "let",
    "param",
    "axis = 7",
];

fn pick<'a, T>(rng: &mut SplitMix64, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

fn mutate(text: &str, rng: &mut SplitMix64) -> String {
    let mut s = text.to_string();
    for _ in 0..1 + rng.next_u64() % 3 {
        let boundaries: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
        let at = *pick(rng, &boundaries);
        let lines: Vec<&str> = s.lines().collect();
        s = match rng.next_u64() % 6 {
            0 => {
                let end = boundaries
                    .iter()
                    .copied()
                    .find(|&b| b >= at + 1 + (rng.next_u64() % 8) as usize);
                format!("{}{}", &s[..at], &s[end.unwrap_or(s.len())..])
            }
            1 => format!("{}{}{}", &s[..at], pick(rng, INTERESTING), &s[at..]),
            2 if !lines.is_empty() => {
                let i = (rng.next_u64() % lines.len() as u64) as usize;
                let mut l: Vec<&str> = lines.clone();
                l.remove(i);
                l.join("\n")
            }
            3 if !lines.is_empty() => {
                let i = (rng.next_u64() % lines.len() as u64) as usize;
                let j = (rng.next_u64() % lines.len() as u64) as usize;
                let mut l: Vec<&str> = lines.clone();
                l.swap(i, j);
                l.join("\n")
            }
            4 if !lines.is_empty() => {
                let i = (rng.next_u64() % lines.len() as u64) as usize;
                let mut l: Vec<&str> = lines.clone();
                l.insert(i, lines[i]);
                l.join("\n")
            }
            _ => {
                // Replace the next number with an extreme one.
                match s[at..].find(|c: char| c.is_ascii_digit()) {
                    Some(off) => {
                        let start = at + off;
                        let len = s[start..]
                            .find(|c: char| !c.is_ascii_digit())
                            .unwrap_or(s.len() - start);
                        format!(
                            "{}{}{}",
                            &s[..start],
                            pick(rng, &["0", "1", "100000", "99999999999999", "3"]),
                            &s[start + len..]
                        )
                    }
                    None => s,
                }
            }
        };
    }
    s
}

/// Runs the whole pipeline and, for small graphs, the interpreter.
fn exercise(g: &mut Graph) {
    let mut pm = PassManager::new(
        DEFAULT_PIPELINE,
        Instrumentation {
            verify_each: true,
            ..Default::default()
        },
    )
    .unwrap();
    if pm.run(g, &mut std::io::sink()).is_err() {
        return;
    }
    let mut inputs = HashMap::new();
    for &i in &g.inputs {
        let shape: Vec<usize> = g
            .node(i)
            .ty
            .shape
            .0
            .iter()
            .map(|d| d.as_static().unwrap_or(2))
            .collect();
        if lopper_ir::tensor::checked_numel(&shape).is_none_or(|n| n > 100_000) {
            return;
        }
        inputs.insert(
            g.node(i).name.clone(),
            lopper_runtime::random_tensor(shape, 1),
        );
    }
    let symbols: BTreeMap<String, usize> = g
        .graph
        .node_weights()
        .flat_map(|n| n.ty.shape.0.clone())
        .filter_map(|d| match d {
            Dim::Symbol(s) => Some((s, 2)),
            Dim::Static(_) => None,
        })
        .collect();
    let too_big = g.graph.node_weights().any(|n| {
        n.ty.shape
            .numel()
            .and_then(|s| s.eval(&symbols))
            .is_none_or(|n| n > 1_000_000)
    });
    // The loop interpreter walks the tree: keep its share of the test small.
    let work: u64 = g
        .graph
        .node_indices()
        .map(|n| {
            let node = g.node(n);
            lopper_ir::graph::flops(&node.op, &g.operand_types(n), &node.ty)
                .eval(&symbols)
                .unwrap_or(u64::MAX)
        })
        .fold(0u64, u64::saturating_add);
    let lowered = lopper_passes::lower_to_loops::lower_to_loops(g, true, 0);
    if !too_big && work < 200_000 {
        let _ = lopper_runtime::run_graph(g, &inputs, &BTreeMap::new());
        if let Ok(m) = lowered {
            let _ = lopper_runtime::run_module(&m, &inputs, &BTreeMap::new());
        }
    }
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn mutated_inputs_never_panic() {
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    for p in files("examples", "lop")
        .into_iter()
        .chain(files("tests/data/ops", "lop"))
        .chain(files("tests/filetests", "gir"))
    {
        let text = std::fs::read_to_string(&p).unwrap();
        sources.push((p, text));
    }
    let mut tried = 0;
    for (path, text) in &sources {
        let is_gir = path.extension().is_some_and(|e| e == "gir");
        // Filetests hold several cases; mutate each one.
        let cases: Vec<&str> = if is_gir {
            text.split("\n// -----\n").collect()
        } else {
            vec![text]
        };
        for (c, case) in cases.iter().enumerate() {
            for seed in 0..MUTANTS_PER_FILE / cases.len() as u64 + 1 {
                let mut rng = SplitMix64::new(seed * 7919 + c as u64);
                let mutant = mutate(case, &mut rng);
                let dir = path.parent().unwrap();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let built = if is_gir {
                        lopper_ir::graph::parse_gir(&mutant).ok()
                    } else {
                        lopper_frontend::compile_source(&mutant, dir).ok()
                    };
                    if let Some(mut g) = built {
                        exercise(&mut g);
                    }
                }));
                assert!(
                    result.is_ok(),
                    "panic on a mutant of {} (case {c}, seed {seed}):\n{mutant}",
                    path.display()
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 1000, "only {tried} mutants");
}
