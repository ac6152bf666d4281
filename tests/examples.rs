//! Every example's graph IR after each pass of the default pipeline
//! (insta snapshots), and the text round trip of every printed graph.

mod common;

use lopper_ir::graph::{parse_gir, print_gir};
use lopper_passes::{parse_pipeline, Instrumentation, PassManager, DEFAULT_PIPELINE};

const EXAMPLES: &[&str] = &["mlp", "lenet5", "transformer", "digits_mlp"];

/// `print(parse(text)) == text` for a printed graph.
fn assert_round_trip(what: &str, text: &str) {
    let parsed = parse_gir(text).unwrap_or_else(|d| {
        panic!(
            "{what} does not parse back:\n{}",
            lopper_ir::diagnostic::render(what, text, &d)
        )
    });
    assert_eq!(
        print_gir(&parsed),
        text,
        "{what}: printing the parsed graph changes the text"
    );
}

#[test]
fn examples_after_each_pass() {
    for name in EXAMPLES {
        let mut g = common::load(&format!("examples/{name}.lop"));
        let text = print_gir(&g);
        assert_round_trip(&format!("{name} as built"), &text);
        insta::assert_snapshot!(format!("{name}@00-input"), text);
        for (i, spec) in parse_pipeline(DEFAULT_PIPELINE).unwrap().iter().enumerate() {
            let instrumentation = Instrumentation {
                verify_each: true,
                ..Default::default()
            };
            PassManager::new(&spec.to_string(), instrumentation)
                .unwrap()
                .run(&mut g, &mut std::io::sink())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = print_gir(&g);
            assert_round_trip(&format!("{name} after {spec}"), &text);
            insta::assert_snapshot!(format!("{name}@{:02}-{}", i + 1, spec.name), text);
        }
    }
}

#[test]
fn literals_round_trip_exactly() {
    // Decimal literals print the shortest text that reads back to the same
    // f32; long literals print their bits.
    let small = "graph @g(%x: f32[3]) -> (y: f32[3]) {\n  %c = param {data = [0.1, -2.5e-8, 3.4028235e38]} : f32[3]\n  %y = add %x, %c : f32[3]\n  return %y\n}\n";
    assert_round_trip("small literal", small);
    let values: Vec<String> = (0..20)
        .map(|i| format!("{:08x}", (i as f32 * 0.37).to_bits()))
        .collect();
    let big = format!(
        "graph @g(%x: f32[20]) -> (y: f32[20]) {{\n  %c = param {{hex = \"{}\"}} : f32[20]\n  %y = mul %x, %c : f32[20]\n  return %y\n}}\n",
        values.concat()
    );
    assert_round_trip("hex literal", &big);
    let g = parse_gir(&big).unwrap();
    let c = g.find("c").unwrap();
    let lopper_ir::Op::Param(p) = &g.node(c).op else {
        panic!("c is a param")
    };
    assert_eq!(p.data.data[3], 3.0 * 0.37);
}
