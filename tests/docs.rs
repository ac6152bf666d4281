//! The examples in the docs are real: every ```lop block of docs/dsl.md
//! builds, and every ```lop-error block fails with exactly the diagnostic
//! in the ```text block after it.

use std::path::Path;

fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(tag) = line.strip_prefix("```") {
            if tag.is_empty() {
                continue;
            }
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push((tag.to_string(), body.join("\n") + "\n"));
        }
    }
    out
}

#[test]
fn dsl_reference_examples_build() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let text = std::fs::read_to_string(docs.join("dsl.md")).unwrap();
    let blocks = blocks(&text);
    let mut built = 0;
    for (i, (tag, body)) in blocks.iter().enumerate() {
        match tag.as_str() {
            "lop" => {
                if let Err(d) = lopper_frontend::compile_source(body, &docs) {
                    panic!(
                        "block {i} fails:\n{}",
                        lopper_ir::diagnostic::render("dsl.md", body, &d)
                    );
                }
                built += 1;
            }
            "lop-error" => {
                let d = lopper_frontend::compile_source(body, &docs)
                    .expect_err("an error example must fail");
                let rendered = lopper_ir::diagnostic::render("broken.lop", body, &d);
                let (next_tag, expected) = &blocks[i + 1];
                assert_eq!(next_tag, "text");
                assert_eq!(rendered.trim_end(), expected.trim_end());
            }
            _ => {}
        }
    }
    assert!(built >= 15, "only {built} examples");
}
