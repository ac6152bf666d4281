//! The ONNX importer against numbers lopper did not compute: ONNX Runtime's
//! outputs for every peer model and for small op graphs
//! (`tests/data/make_expected.py`), and the ONNX project's own backend node
//! tests (`tests/data/onnx-node/make_cases.py`). Each imported model runs on
//! the reference interpreter and through Cranelift at -O2. Also: `lopper
//! import` round trips, and malformed files get errors, not panics.

mod common;

use common::{assert_close, read, tensor};
use lopper_backends::cranelift::compile_jit;
use lopper_frontend::onnx::{load_onnx, proto, TensorData};
use lopper_ir::{Dim, Graph, Tensor};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn peers() -> PathBuf {
    common::root().join("../shared/peers/models")
}

fn import(path: &Path) -> Graph {
    load_onnx(path).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Binds every symbolic size of `g`'s inputs from the feeds' shapes.
fn sizes_of(g: &Graph, feeds: &HashMap<String, Tensor>) -> BTreeMap<String, usize> {
    let mut sizes = BTreeMap::new();
    for &i in &g.inputs {
        let node = g.node(i);
        if let Some(t) = feeds.get(&node.name) {
            for (d, &n) in node.ty.shape.0.iter().zip(&t.shape) {
                if let Dim::Symbol(s) = d {
                    sizes.insert(s.clone(), n);
                }
            }
        }
    }
    sizes
}

/// The outputs of `g` on the interpreter and on Cranelift at -O2.
fn run_both(
    g: &Graph,
    feeds: &HashMap<String, Tensor>,
) -> Result<[Vec<(String, Tensor)>; 2], String> {
    let sizes = sizes_of(g, feeds);
    let interpreted =
        lopper_runtime::run_graph(g, feeds, &sizes).map_err(|e| format!("interpreter: {e}"))?;
    let module = common::compiled_at(g, 2);
    let jit = compile_jit(&module).map_err(|e| format!("cranelift: {e}"))?;
    let compiled = jit
        .run(feeds, &sizes)
        .map_err(|e| format!("cranelift: {e}"))?;
    Ok([interpreted, compiled])
}

/// Every model of `../shared/peers/models` equals ONNX Runtime's output.
#[test]
fn peer_models_match_onnx_runtime() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(peers()).expect("../shared/peers/models is beside the clone") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let g = import(&path);
        let input_name = g.node(g.inputs[0]).name.clone();
        let shape = g.node(g.inputs[0]).ty.shape.as_static().unwrap();
        let mirrored = format!("tests/data/ort/{name}.safetensors");
        let (x, want, stride) = if common::root().join(&mirrored).exists() {
            (
                tensor(read(&mirrored, "input")),
                tensor(read(&mirrored, "output")),
                1,
            )
        } else {
            let data = format!("tests/data/ort/onnx/{name}.safetensors");
            let seed = read(&data, "seed").values[0] as u64;
            let x = lopper_runtime::random_tensor(shape, seed);
            match lopper_runtime::read_tensor_file(&common::root().join(&data), Some("stride")) {
                Ok(stride) => (
                    x,
                    tensor(read(&data, "output_sample")),
                    stride.values[0] as usize,
                ),
                Err(_) => (x, tensor(read(&data, "output")), 1),
            }
        };
        let feeds = HashMap::from([(input_name, x)]);
        for (backend, outputs) in ["interpreter", "cranelift"]
            .iter()
            .zip(run_both(&g, &feeds).unwrap())
        {
            let got = &outputs[0].1;
            let got = if stride == 1 {
                got.clone()
            } else {
                let data: Vec<f32> = got.data.iter().step_by(stride).copied().collect();
                Tensor {
                    shape: vec![data.len()],
                    data,
                }
            };
            assert_close(&format!("{name} ({backend})"), &got, &want, RTOL, ATOL);
        }
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "gemm_1024",
            "gemm_256",
            "gemm_512",
            "lenet5_b1",
            "lenet5_b64",
            "matvec_784x300",
            "mlp_b1",
            "mlp_b64",
            "null_b1",
            "transformer_b1"
        ],
        "every peer model is checked"
    );
}

/// The small op graphs of `tests/data/ops` (grouped conv with dilation and
/// asymmetric pads, pools, batch norm, elementwise, reductions, the GELU
/// pattern, layer norm) equal ONNX Runtime's output.
#[test]
fn op_graphs_match_onnx_runtime() {
    for name in common::OP_CASES {
        let g = import(&common::root().join(format!("tests/data/ops/{name}.onnx")));
        let data = format!("tests/data/ops/{name}.safetensors");
        let feeds: HashMap<String, Tensor> = g
            .inputs
            .iter()
            .map(|&i| {
                let n = g.node(i).name.clone();
                let t = tensor(read(&data, &n));
                (n, t)
            })
            .collect();
        let want = tensor(read(&data, "expected"));
        for (backend, outputs) in ["interpreter", "cranelift"]
            .iter()
            .zip(run_both(&g, &feeds).unwrap())
        {
            assert_close(
                &format!("{name} ({backend})"),
                &outputs[0].1,
                &want,
                RTOL,
                ATOL,
            );
        }
    }
}

/// The erf form of GELU in the transformer becomes one `gelu` node.
#[test]
fn erf_gelu_pattern_becomes_gelu() {
    let g = import(&peers().join("transformer_b1.onnx"));
    let ops: Vec<&str> = g.graph.node_weights().map(|n| n.op.name()).collect();
    assert_eq!(ops.iter().filter(|&&o| o == "gelu").count(), 1, "{ops:?}");
    assert!(!ops.contains(&"erf"), "{ops:?}");
}

// ---------------------------------------------------------------- node tests

fn node_dir() -> PathBuf {
    common::root().join("tests/data/onnx-node")
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let t = proto::TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    match lopper_frontend::onnx::decode_tensor(&t, Path::new("")) {
        Ok(TensorData::Float(t)) => Ok(t),
        Ok(TensorData::Int(..)) => Err(format!(
            "{} is {}, not FLOAT",
            path.file_name().unwrap().to_string_lossy(),
            proto::data_type::name(t.data_type)
        )),
        Err(e) => Err(e),
    }
}

/// ONNX's own tolerance for node tests is rtol 1e-3; lopper's exp, erf and
/// tanh are f32 polynomials, so the absolute floor is 1e-5.
fn compare(what: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.shape, want.shape
        ));
    }
    for (i, (&a, &e)) in got.data.iter().zip(&want.data).enumerate() {
        let same = (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= 1e-5 + 1e-3 * e.abs();
        if !same {
            return Err(format!("{what}: element {i} is {a}, expected {e}"));
        }
    }
    Ok(())
}

/// Runs one node test case: every data set on both backends.
///
/// The node tests pass axes, shapes and split sizes as run-time inputs;
/// lopper's run-time tensors are f32, so integer inputs are frozen into
/// initializers holding the data set's values before import (as TVM's
/// importer does with `freeze_params`).
fn run_case(dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    for set in common::sorted_files(dir)
        .iter()
        .filter(|f| f.starts_with("test_data_set_"))
    {
        let set = dir.join(set);
        let mut model = model.clone();
        let graph = model.graph.as_mut().ok_or("no graph")?;
        let mut float_inputs = Vec::new();
        let mut kept = Vec::new();
        for (j, input) in graph.input.clone().into_iter().enumerate() {
            let data =
                std::fs::read(set.join(format!("input_{j}.pb"))).map_err(|e| e.to_string())?;
            let mut t = proto::TensorProto::decode(data.as_slice()).map_err(|e| e.to_string())?;
            if proto::data_type::is_integer(t.data_type) {
                t.name = input.name.clone();
                graph.initializer.push(t);
            } else {
                float_inputs.push(j);
                kept.push(input);
            }
        }
        graph.input = kept;
        let g = lopper_frontend::onnx::import_model(&model, dir).map_err(|d| {
            let first = d.first().map_or(String::new(), |d| d.message.clone());
            format!("import: {first}")
        })?;
        let mut feeds = HashMap::new();
        for (&i, j) in g.inputs.iter().zip(float_inputs) {
            feeds.insert(
                g.node(i).name.clone(),
                read_pb(&set.join(format!("input_{j}.pb")))?,
            );
        }
        let mut expected = Vec::new();
        for j in 0..g.outputs.len() {
            expected.push(read_pb(&set.join(format!("output_{j}.pb")))?);
        }
        for (backend, outputs) in ["interpreter", "cranelift"]
            .iter()
            .zip(run_both(&g, &feeds)?)
        {
            for ((name, got), want) in outputs.iter().zip(&expected) {
                compare(&format!("{backend} `{name}`"), got, want)?;
            }
        }
    }
    Ok(())
}

/// The operator a case tests: its model's single op, or `expanded`.
fn case_op(model: &proto::ModelProto, case: &str) -> String {
    let mut ops: Vec<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .map(|n| n.op_type.clone())
        .collect();
    ops.sort();
    ops.dedup();
    if ops.len() == 1 && !case.contains("_expanded") {
        ops.remove(0)
    } else {
        "(expanded functions)".to_string()
    }
}

/// Whether a case computes on f32 data, lopper's one element type: its
/// first input and every output are FLOAT. (Other inputs may be integer
/// operands such as axes, which are frozen.)
fn is_f32_case(model: &proto::ModelProto) -> bool {
    let float = |v: &proto::ValueInfoProto| {
        v.r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .is_none_or(|t| t.elem_type == proto::data_type::FLOAT)
    };
    let Some(g) = &model.graph else { return true };
    g.input.first().is_none_or(float) && g.output.iter().all(float)
}

/// The ONNX backend node tests of the supported operators. At least 95% of
/// the cases on f32 data pass; the failing cases are exactly those listed,
/// with their reasons, in `tests/data/onnx-node/expected_failures.txt` (so a
/// fix or a regression both show). Prints the per-operator table of
/// `docs/onnx.md` (`cargo test --test onnx onnx_node_tests -- --nocapture`).
#[test]
fn onnx_node_tests() {
    let cases: Vec<String> = std::fs::read_to_string(node_dir().join("cases.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let skipped = std::fs::read_to_string(node_dir().join("skipped.txt")).unwrap();
    // operator -> (cases, passed, f32 cases, f32 passed)
    let mut per_op: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for case in &cases {
        let dir = node_dir().join(case);
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
        let result = std::panic::catch_unwind(|| run_case(&dir))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        let f32_case = is_f32_case(&model);
        let entry = per_op.entry(case_op(&model, case)).or_default();
        entry[0] += 1;
        entry[2] += usize::from(f32_case);
        match result {
            Ok(()) => {
                entry[1] += 1;
                entry[3] += usize::from(f32_case);
            }
            Err(reason) => {
                failures.insert(case.clone(), reason);
            }
        }
    }
    for name in skipped.lines() {
        let entry = per_op.entry("Identity".into()).or_default();
        entry[0] += 1;
        entry[2] += 1;
        failures.insert(
            name.to_string(),
            "a sequence or optional, not a tensor".to_string(),
        );
    }
    let mut totals = [0usize; 4];
    println!("| operator | cases | pass | cases on f32 data | pass |\n|---|---|---|---|---|");
    for (op, counts) in &per_op {
        println!(
            "| {op} | {} | {} | {} | {} |",
            counts[0], counts[1], counts[2], counts[3]
        );
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let percent = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "| **all** | **{}** | **{}** ({:.1}%) | **{}** | **{}** ({:.1}%) |\n",
        totals[0],
        totals[1],
        percent(totals[1], totals[0]),
        totals[2],
        totals[3],
        percent(totals[3], totals[2])
    );
    for (case, reason) in &failures {
        println!("{case}: {reason}");
    }
    let listed: BTreeMap<String, String> =
        std::fs::read_to_string(node_dir().join("expected_failures.txt"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, reason) = l.split_once(": ").unwrap_or((l, ""));
                (name.to_string(), reason.to_string())
            })
            .collect();
    let unexpected: Vec<&String> = failures
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .collect();
    let fixed: Vec<&String> = listed
        .keys()
        .filter(|k| !failures.contains_key(*k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "cases that fail but are not listed as failing: {unexpected:?}"
    );
    assert!(
        fixed.is_empty(),
        "cases listed as failing that pass (update the list): {fixed:?}"
    );
    assert!(
        totals[3] * 100 >= totals[2] * 95,
        "{} of {} node tests on f32 data pass, under 95%",
        totals[3],
        totals[2]
    );
}
