//! Filetests: `tests/filetests/<pass>/*.gir` and `*.lir`, in the manner of
//! LLVM's FileCheck tests and Cranelift's filetests.
//!
//! A file starts with `// RUN: <pipeline>`; its cases are separated by lines
//! `// -----`. Each case is parsed, run through the pipeline with the
//! verifier after every pass, and printed; a case that fails prints its
//! error instead. The outputs of all cases, separated the same way, are the
//! file's insta snapshot.

use lopper_ir::graph::parse_gir;
use lopper_ir::loops::parse_lir;
use lopper_passes::{Instrumentation, Ir, PassManager};

fn parse(case: &str, loops: bool) -> Result<Ir, String> {
    let parsed = if loops {
        parse_lir(case).map(Ir::Loops)
    } else {
        parse_gir(case).map(Ir::Graph)
    };
    parsed.map_err(|d| lopper_ir::diagnostic::render("case", case, &d))
}

fn run_case(pipeline: &str, case: &str, loops: bool) -> String {
    let mut ir = match parse(case, loops) {
        Ok(ir) => ir,
        Err(rendered) => return rendered,
    };
    let instrumentation = Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    let mut pm = match PassManager::new(pipeline, instrumentation) {
        Ok(pm) => pm,
        Err(e) => return format!("error: {e}\n"),
    };
    match pm.run_ir(&mut ir, &mut std::io::sink()) {
        Ok(_) => {
            let text = ir.print();
            let again = parse(&text, matches!(ir, Ir::Loops(_))).map(|ir| ir.print());
            assert_eq!(
                again.as_deref(),
                Ok(text.as_str()),
                "the output must round-trip"
            );
            text
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn filetests() {
    insta::glob!("filetests/**/*.?ir", |path| {
        let loops = path.extension().is_some_and(|e| e == "lir");
        let text = std::fs::read_to_string(path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let pipeline = first
            .strip_prefix("// RUN:")
            .unwrap_or_else(|| {
                panic!(
                    "{}: the first line must be `// RUN: <pipeline>`",
                    path.display()
                )
            })
            .trim();
        let body = &text[first.len()..];
        let outputs: Vec<String> = body
            .split("\n// -----\n")
            .map(|case| run_case(pipeline, case, loops))
            .collect();
        insta::assert_snapshot!(outputs.join("// -----\n"));
    });
}
