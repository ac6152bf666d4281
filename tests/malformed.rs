//! Bad input of every kind gets a diagnostic, a non-zero exit and no panic.
//!
//! Each case writes its files into a scratch folder, runs the `lopper`
//! binary there, and snapshots the exit code and what it printed.

mod common;

use safetensors::tensor::{Dtype, TensorView};

const MLP_HEAD: &str = "model m {\n    weights \"w.safetensors\"\n    input x: f32[batch, 4]\n    param fc.weight: f32[3, 4]\n    param fc.bias: f32[3]\n";

fn weights(entries: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, dtype, shape)| vec![0u8; shape.iter().product::<usize>() * dtype.bitsize() / 8])
        .collect();
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .zip(&bytes)
        .map(|((n, d, s), b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn good_weights() -> Vec<u8> {
    weights(&[
        ("fc.weight", Dtype::F32, vec![3, 4]),
        ("fc.bias", Dtype::F32, vec![3]),
    ])
}

fn model(body: &str) -> Vec<u8> {
    format!("{MLP_HEAD}{body}\n}}\n").into_bytes()
}

struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &'static [&'static str],
}

fn case(
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &'static [&'static str],
) -> Case {
    Case { name, files, args }
}

fn cases() -> Vec<Case> {
    let lop = |text: &str| vec![("m.lop", text.as_bytes().to_vec())];
    let with_weights = |body: &str, w: Vec<u8>| vec![("m.lop", model(body)), ("w.safetensors", w)];
    let gir = |text: &str| vec![("g.gir", text.as_bytes().to_vec())];
    let check: &'static [&'static str] = &["check", "m.lop"];
    let opt: &'static [&'static str] = &["opt", "g.gir"];
    let full = include_str!("../examples/mlp.lop");
    let tiny = "model t {\n    input x: f32[batch, 4]\n    output y = relu(x)\n}\n";
    vec![
        case("empty_file", lop(""), check),
        case("truncated_file", lop(&full[..full.len() / 2]), check),
        case("garbage_bytes", vec![("m.lop", vec![0xff, 0xfe, 0x00, 0x13, 0x37, 0x80])], check),
        case("garbage_text", lop("hello world, this is not a model"), check),
        case("missing_model_file", vec![], &["check", "nowhere.lop"]),
        case("unknown_op", with_weights("output y = relux(linear(x, fc.weight, fc.bias))", good_weights()), check),
        case("wrong_arity", with_weights("output y = relu(x, x)", good_weights()), check),
        case("bad_shapes", with_weights("output y = linear(x, fc.weight, fc.weight)", good_weights()), check),
        case("mismatched_broadcast", with_weights("output y = linear(x, fc.weight) + x", good_weights()), check),
        case("missing_weights_file", vec![("m.lop", model("output y = x"))], check),
        case(
            "missing_tensor",
            with_weights("output y = x", weights(&[("fc.weight", Dtype::F32, vec![3, 4])])),
            check,
        ),
        case(
            "wrong_dtype",
            with_weights(
                "output y = x",
                weights(&[("fc.weight", Dtype::F64, vec![3, 4]), ("fc.bias", Dtype::F32, vec![3])]),
            ),
            check,
        ),
        case(
            "wrong_shape_in_file",
            with_weights(
                "output y = x",
                weights(&[("fc.weight", Dtype::F32, vec![4, 3]), ("fc.bias", Dtype::F32, vec![3])]),
            ),
            check,
        ),
        case("weights_not_safetensors", vec![("m.lop", model("output y = x")), ("w.safetensors", b"not a tensor file".to_vec())], check),
        case("huge_dims", lop("model m {\n    input x: f32[4294967296, 4294967296, 4294967296]\n    output y = relu(x)\n}\n"), check),
        case("dim_overflows_u64", lop("model m {\n    input x: f32[99999999999999999999999]\n    output y = x\n}\n"), check),
        case("duplicate_names", with_weights("let h = relu(x)\n    let h = tanh(x)\n    output y = h", good_weights()), check),
        case("unknown_value", with_weights("output y = relu(fc.weigth)", good_weights()), check),
        case("unknown_argument", with_weights("output y = softmax(x, axes = 1)", good_weights()), check),
        case("axis_out_of_range", with_weights("output y = softmax(x, axis = 2)", good_weights()), check),
        case("several_errors_at_once", lop("model m {\n    input x: f32[2, 3]\n    let a = relu(x\n    let b = tanh(q)\n    output y = x @ x\n    output z = = 3\n}\n"), check),
        case("param_without_data", lop("model m {\n    input x: f32[2]\n    param w: f32[2]\n    output y = x * w\n}\n"), check),
        case("symbolic_param", lop("model m {\n    input x: f32[n]\n    param w: f32[n] = zeros()\n    output y = x * w\n}\n"), check),
        case("unknown_initializer", lop("model m {\n    input x: f32[2]\n    param w: f32[2] = gaussian(0, 1)\n    output y = x * w\n}\n"), check),
        case("literal_count", lop("model m {\n    input x: f32[3]\n    param w: f32[3] = [1, 2]\n    output y = x * w\n}\n"), check),
        case("unknown_dtype", lop("model m {\n    input x: f16[2]\n    output y = x\n}\n"), check),
        case("no_output", lop("model m {\n    input x: f32[2]\n    let y = relu(x)\n}\n"), check),
        case("reshape_count", lop("model m {\n    input x: f32[b, 6]\n    output y = reshape(x, shape = [b, 4])\n}\n"), check),
        case("kernel_larger_than_input", lop("model m {\n    input x: f32[1, 1, 3, 3]\n    param w: f32[1, 1, 5, 5] = ones()\n    output y = conv2d(x, w)\n}\n"), check),
        case("bad_conv_groups", lop("model m {\n    input x: f32[1, 3, 8, 8]\n    param w: f32[4, 1, 3, 3] = ones()\n    output y = conv2d(x, w, groups = 2)\n}\n"), check),
        case("gir_cycle", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %a = add %x, %b : f32[2]\n  %b = relu %a : f32[2]\n  %y = tanh %b : f32[2]\n  return %y\n}\n"), opt),
        case("gir_undefined_value", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu %z : f32[2]\n  return %y\n}\n"), opt),
        case("gir_duplicate_name", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu %x : f32[2]\n  %y = tanh %x : f32[2]\n  return %y\n}\n"), opt),
        case("gir_syntax", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu %x f32[2]\n  return %y\n}\n"), opt),
        case("gir_bad_attribute", gir("graph @g(%x: f32[2,2]) -> (y: f32[2,2]) {\n  %y = softmax %x {axis = 1, temperature = 2} : f32[2,2]\n  return %y\n}\n"), opt),
        case("gir_wrong_operand_count", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %y = add %x : f32[2]\n  return %y\n}\n"), opt),
        case("gir_missing_weights", gir("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %w = param {file = \"none.safetensors\", tensor = \"w\"} : f32[2]\n  %y = add %x, %w : f32[2]\n  return %y\n}\n"), opt),
        case("bad_cli_flag", lop(tiny), &["check", "m.lop", "--frobnicate"]),
        case("missing_subcommand", vec![], &[]),
        case("unknown_pass", lop(tiny), &["dump", "m.lop", "--passes", "fold-everything"]),
        case("unclosed_pipeline", lop(tiny), &["dump", "m.lop", "--passes", "dce{"]),
        case("unknown_pass_option", lop(tiny), &["dump", "m.lop", "--passes", "dce{aggressive=1}"]),
        case("unknown_print_after", lop(tiny), &["dump", "m.lop", "--print-after", "tiling"]),
        case("stop_after_not_in_pipeline", lop(tiny), &["dump", "m.lop", "--passes", "dce", "--stop-after", "cse"]),
        case("bad_opt_level", lop(tiny), &["dump", "m.lop", "-O", "7"]),
        case("run_missing_input", with_weights("output y = linear(x, fc.weight, fc.bias)", good_weights()), &["run", "m.lop", "--input", "z=random:1"]),
        case("run_random_needs_size", with_weights("output y = linear(x, fc.weight, fc.bias)", good_weights()), &["run", "m.lop", "--input", "x=random:1"]),
        case("run_bad_set", with_weights("output y = linear(x, fc.weight, fc.bias)", good_weights()), &["run", "m.lop", "--input", "x=random:1", "--set", "batch=-3"]),
        case(
            "run_wrong_shaped_input",
            vec![("m.lop", model("output y = linear(x, fc.weight, fc.bias)")), ("w.safetensors", good_weights()), ("in.safetensors", weights(&[("x", Dtype::F32, vec![2, 5])]))],
            &["run", "m.lop", "--input", "x=in.safetensors:x"],
        ),
        case("run_unknown_backend", with_weights("output y = x", good_weights()), &["run", "m.lop", "--input", "x=random:1", "--set", "batch=1", "--backend", "tpu"]),
        case("eval_missing_data", with_weights("output y = x", good_weights()), &["eval", "m.lop", "--data", "nowhere.safetensors"]),
    ]
}

#[test]
fn malformed_inputs_are_diagnosed() {
    let all = cases();
    assert!(all.len() >= 30);
    for c in all {
        let dir = common::scratch(c.name);
        for (name, bytes) in &c.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let (code, stdout, stderr) = common::lopper(&dir, c.args);
        assert!(code != 0, "{}: exit code 0\n{stderr}", c.name);
        assert!(
            code != 101 && !stderr.contains("panicked"),
            "{}: panicked\n{stderr}",
            c.name
        );
        assert!(!stderr.trim().is_empty(), "{}: no diagnostic", c.name);
        insta::assert_snapshot!(
            c.name,
            format!(
                "$ lopper {}\nexit code: {code}\n--- stderr\n{stderr}--- stdout\n{stdout}",
                c.args.join(" ")
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
