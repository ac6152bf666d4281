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

/// Symbolic input dims (`batch`, `N`, and a dim with no name) become
/// symbolic sizes; the Shape-Gather-Concat-Reshape chain keeps `batch`
/// symbolic; one compiled model serves batch 1 and 5 (ONNX Runtime's outputs).
#[test]
fn symbolic_dims_become_symbolic_sizes() {
    let g = import(&common::root().join("tests/data/onnx/symbolic.onnx"));
    let types: Vec<String> = g.inputs.iter().map(|&i| g.node(i).ty.to_string()).collect();
    assert_eq!(types, ["f32[batch,3,8,8]", "f32[N,dim1]"]);
    let reshape = g
        .graph
        .node_weights()
        .find(|n| n.op.name() == "reshape")
        .expect("the Reshape is imported");
    assert_eq!(reshape.ty.to_string(), "f32[batch,36]");
    let data = "tests/data/onnx/symbolic.safetensors";
    for b in [1, 5] {
        let feeds = HashMap::from([
            ("x".to_string(), tensor(read(data, &format!("x_{b}")))),
            ("z".to_string(), tensor(read(data, &format!("z_{b}")))),
        ]);
        for (backend, outputs) in ["interpreter", "cranelift"]
            .iter()
            .zip(run_both(&g, &feeds).unwrap())
        {
            assert_close(
                &format!("probs b={b} ({backend})"),
                &outputs[0].1,
                &tensor(read(data, &format!("probs_{b}"))),
                RTOL,
                ATOL,
            );
            assert_close(
                &format!("dev b={b} ({backend})"),
                &outputs[1].1,
                &tensor(read(data, &format!("dev_{b}"))),
                RTOL,
                ATOL,
            );
        }
    }
}

/// Initializers in an external data file are read (Gemm with alpha and beta).
#[test]
fn external_data_is_read() {
    let g = import(&common::root().join("tests/data/onnx/external.onnx"));
    let data = "tests/data/onnx/external.safetensors";
    let feeds = HashMap::from([("x".to_string(), tensor(read(data, "x")))]);
    for (backend, outputs) in ["interpreter", "cranelift"]
        .iter()
        .zip(run_both(&g, &feeds).unwrap())
    {
        assert_close(
            &format!("external ({backend})"),
            &outputs[0].1,
            &tensor(read(data, "y")),
            RTOL,
            ATOL,
        );
    }
}

/// The issue's acceptance command: `lopper compile lenet5_b1.onnx` gives a
/// shared object whose output equals ONNX Runtime's.
#[test]
fn compiled_onnx_library_matches_onnx_runtime() {
    let dir = common::scratch("onnx-lenet5");
    let model = peers().join("lenet5_b1.onnx");
    let lib = dir.join("liblenet5.so");
    let (code, _, err) = common::lopper(
        &common::root(),
        &[
            "compile",
            model.to_str().unwrap(),
            "-o",
            lib.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("lenet5.h").exists());
    let library = lopper_runtime::SharedModel::open(&lib).unwrap();
    let data = "tests/data/ort/lenet5_b1.safetensors";
    let feeds = HashMap::from([("input".to_string(), tensor(read(data, "input")))]);
    let out = library.run(&feeds, &BTreeMap::new()).unwrap();
    assert_close(
        "liblenet5.so",
        &out[0].1,
        &tensor(read(data, "output")),
        RTOL,
        ATOL,
    );
}

/// Every node as `name = op operands {attrs}: type`, params by type and
/// values only (their sources differ: literal vs weights file).
fn structure(g: &Graph) -> Vec<String> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            let operands: Vec<&str> = g
                .operands(n)
                .iter()
                .map(|&o| g.node(o).name.as_str())
                .collect();
            let attrs = match &node.op {
                lopper_ir::Op::Param(p) => {
                    let bits: Vec<u32> = p.data.data.iter().map(|v| v.to_bits()).collect();
                    format!(
                        "{} values, bit sum {}",
                        bits.len(),
                        bits.iter().map(|&b| b as u64).sum::<u64>()
                    )
                }
                op => format!("{:?}", op.attrs()),
            };
            format!(
                "{} = {} {operands:?} {attrs}: {}",
                node.name,
                node.op.name(),
                node.ty
            )
        })
        .collect()
}

/// `lopper import` writes a `.lop` and its weights; compiling that `.lop`
/// gives the same outputs as compiling the `.onnx` (the transformer: layer
/// norm, split, 5-D transpose, GELU; the symbolic model: Shape-derived reshape).
#[test]
fn imported_text_compiles_to_the_same_outputs() {
    let dir = common::scratch("onnx-import");
    for (model, size) in [
        (peers().join("transformer_b1.onnx"), None),
        (
            common::root().join("tests/data/onnx/symbolic.onnx"),
            Some(3),
        ),
    ] {
        let stem = model.file_stem().unwrap().to_string_lossy().into_owned();
        let lop = dir.join(format!("{stem}.lop"));
        let (code, out, err) = common::lopper(
            &common::root(),
            &[
                "import",
                model.to_str().unwrap(),
                "-o",
                lop.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("{stem}.safetensors")), "{out}");
        let from_onnx = import(&model);
        let from_text = common::load(lop.to_str().unwrap());
        let (mut a, mut b) = (structure(&from_onnx), structure(&from_text));
        a.sort();
        b.sort();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{stem}: the same graph");
        }
        assert_eq!(a.len(), b.len(), "{stem}: the same graph");
        let mut inputs = HashMap::new();
        for &i in &from_onnx.inputs {
            let bound = from_onnx
                .node(i)
                .ty
                .shape
                .0
                .iter()
                .map(|d| d.as_static().or(size).unwrap())
                .collect();
            inputs.insert(
                from_onnx.node(i).name.clone(),
                lopper_runtime::random_tensor(bound, 9),
            );
        }
        let [_, a] = run_both(&from_onnx, &inputs).unwrap();
        let [_, b] = run_both(&from_text, &inputs).unwrap();
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(x, y, "{stem} output {name}: .onnx and imported .lop differ");
        }
    }
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

// ---------------------------------------------------------------- malformed files

fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TensorTypeProto {
                elem_type,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| proto::DimensionProto {
                            value: Some(proto::Dimension::Value(d)),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> proto::NodeProto {
    proto::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A valid model: `y = relu(x @ w)` with `w` an initializer.
fn small_model() -> proto::ModelProto {
    let w = proto::TensorProto {
        name: "w".into(),
        dims: vec![4, 3],
        data_type: proto::data_type::FLOAT,
        float_data: (0..12).map(|i| i as f32 * 0.1).collect(),
        ..Default::default()
    };
    proto::ModelProto {
        ir_version: 8,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(proto::GraphProto {
            name: "small".into(),
            node: vec![
                node("MatMul", "mm", &["x", "w"], &["h"]),
                node("Relu", "act", &["h"], &["y"]),
            ],
            initializer: vec![w],
            input: vec![value_info("x", proto::data_type::FLOAT, &[2, 4])],
            output: vec![value_info("y", proto::data_type::FLOAT, &[2, 3])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `bytes` as a model file and runs `lopper check` on it: the exit
/// code (1, never a panic's 101) and the error text.
fn check_file(dir: &Path, name: &str, bytes: &[u8]) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let (code, _, err) = common::lopper(dir, &["check", name]);
    (code, err)
}

#[test]
fn malformed_onnx_files_get_clear_errors() {
    let dir = common::scratch("onnx-malformed");
    let valid = small_model().encode_to_vec();
    let (code, err) = check_file(&dir, "valid.onnx", &valid);
    assert_eq!(code, 0, "{err}");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.onnx",
            valid[..valid.len() / 2].to_vec(),
            "is not a valid ONNX model (protobuf decoding failed",
        ),
        (
            "text.onnx",
            b"model m { }".to_vec(),
            "not a valid ONNX model",
        ),
    ];
    let mut edit =
        |name: &'static str, expect: &'static str, f: &dyn Fn(&mut proto::ModelProto)| {
            let mut m = small_model();
            f(&mut m);
            cases.push((name, m.encode_to_vec(), expect));
        };
    edit(
        "int_input.onnx",
        "graph input `x` has element type INT32; lopper computes in FLOAT (f32)",
        &|m| {
            m.graph.as_mut().unwrap().input[0] = value_info("x", proto::data_type::INT32, &[2, 4]);
        },
    );
    edit(
        "short_data.onnx",
        "initializer `w` holds 11 values but its shape [4, 3] needs 12",
        &|m| {
            m.graph.as_mut().unwrap().initializer[0].float_data.pop();
        },
    );
    edit(
        "raw_data.onnx",
        "initializer `w` holds 7 bytes of data but its shape [4, 3] of FLOAT needs 48",
        &|m| {
            let w = &mut m.graph.as_mut().unwrap().initializer[0];
            w.float_data.clear();
            w.raw_data = vec![0; 7];
        },
    );
    edit(
        "string_tensor.onnx",
        "initializer `w` has element type STRING (8)",
        &|m| {
            m.graph.as_mut().unwrap().initializer[0].data_type = 8;
        },
    );
    edit("missing_initializer.onnx", "node `mm` (MatMul): reads `w`, which no node before it, graph input or initializer defines", &|m| {
        m.graph.as_mut().unwrap().initializer.clear();
    });
    edit(
        "dangling_output.onnx",
        "output `z` is not computed by any node",
        &|m| {
            m.graph.as_mut().unwrap().output[0].name = "z".into();
        },
    );
    edit(
        "node_order.onnx",
        "node `act` (Relu): reads `h`, which no node before it",
        &|m| {
            m.graph.as_mut().unwrap().node.reverse();
        },
    );
    edit(
        "old_opset.onnx",
        "the model uses ONNX opset 9; lopper reads opsets 13 and up",
        &|m| {
            m.opset_import[0].version = 9;
        },
    );
    edit("no_graph.onnx", "the model has no graph", &|m| {
        m.graph = None
    });
    edit("wrong_shape.onnx", "node `mm` (MatMul): matmul", &|m| {
        m.graph.as_mut().unwrap().input[0] = value_info("x", proto::data_type::FLOAT, &[2, 5]);
    });
    edit(
        "attribute_type.onnx",
        "attribute `perm` should be INTS (type 7), found type 1",
        &|m| {
            let mut t = node("Transpose", "t", &["y"], &["yt"]);
            t.attribute.push(proto::AttributeProto {
                name: "perm".into(),
                r#type: 1,
                f: 1.0,
                ..Default::default()
            });
            let g = m.graph.as_mut().unwrap();
            g.node.push(t);
            g.output[0].name = "yt".into();
        },
    );
    edit("external_missing.onnx", "has external data in", &|m| {
        let w = &mut m.graph.as_mut().unwrap().initializer[0];
        w.float_data.clear();
        w.data_location = 1;
        w.external_data = vec![proto::StringStringEntryProto {
            key: "location".into(),
            value: "nowhere.bin".into(),
        }];
    });
    edit("external_escape.onnx", "outside the model's folder", &|m| {
        let w = &mut m.graph.as_mut().unwrap().initializer[0];
        w.float_data.clear();
        w.data_location = 1;
        w.external_data = vec![proto::StringStringEntryProto {
            key: "location".into(),
            value: "../../etc/passwd".into(),
        }];
    });
    for (name, bytes, expect) in cases {
        let (code, err) = check_file(&dir, name, &bytes);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains(expect),
            "{name}: expected `{expect}` in:\n{err}"
        );
        assert!(
            err.contains(name),
            "{name}: the error names the file:\n{err}"
        );
    }
}

/// One error lists every node of an unsupported operator, with its name,
/// domain and opset, not only the first.
#[test]
fn unsupported_operators_are_listed_together() {
    let dir = common::scratch("onnx-unsupported");
    let mut m = small_model();
    m.opset_import.push(proto::OperatorSetIdProto {
        domain: "com.example".into(),
        version: 2,
    });
    let g = m.graph.as_mut().unwrap();
    g.node.push(node("Resize", "up", &["y"], &["r"]));
    g.node.push(node("LSTM", "", &["r"], &["l"]));
    let mut custom = node("FancyOp", "fancy", &["l"], &["f"]);
    custom.domain = "com.example".into();
    g.node.push(custom);
    g.output[0].name = "f".into();
    let (code, err) = check_file(&dir, "unsupported.onnx", &m.encode_to_vec());
    assert_eq!(code, 1, "{err}");
    for expect in [
        "the model uses 3 node(s) of operators lopper does not import",
        "node `up`: Resize (opset 17)",
        "node #3: LSTM (opset 17)",
        "node `fancy`: com.example::FancyOp (opset 2)",
        "supported: Add, AveragePool",
    ] {
        assert!(err.contains(expect), "expected `{expect}` in:\n{err}");
    }
}
