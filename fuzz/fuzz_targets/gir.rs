//! Graph IR text: parse (which verifies); what parses must print.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = lopper_ir::graph::parse_gir(text) {
            let _ = lopper_ir::graph::print_gir(&g);
        }
    }
});
