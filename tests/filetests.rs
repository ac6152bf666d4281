//! Filetests: `tests/filetests/<pass>/*.gir`, in the manner of LLVM's
//! FileCheck tests and Cranelift's filetests.
//!
//! A file starts with `// RUN: <pipeline>`; its cases are separated by lines
//! `// -----`. Each case is parsed, run through the pipeline with the
//! verifier after every pass, and printed; a case that fails prints its
//! error instead. The outputs of all cases, separated the same way, are the
//! file's insta snapshot.

use lopper_ir::graph::{parse_gir, print_gir};
use lopper_passes::{Instrumentation, PassManager};

fn run_case(pipeline: &str, case: &str) -> String {
    let mut g = match parse_gir(case) {
        Ok(g) => g,
        Err(d) => return lopper_ir::diagnostic::render("case", case, &d),
    };
    let instrumentation = Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    let mut pm = match PassManager::new(pipeline, instrumentation) {
        Ok(pm) => pm,
        Err(e) => return format!("error: {e}\n"),
    };
    match pm.run(&mut g, &mut std::io::sink()) {
        Ok(_) => {
            let text = print_gir(&g);
            let again = parse_gir(&text).map(|g| print_gir(&g));
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
    insta::glob!("filetests/**/*.gir", |path| {
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
            .map(|case| run_case(pipeline, case))
            .collect();
        insta::assert_snapshot!(outputs.join("// -----\n"));
    });
}
