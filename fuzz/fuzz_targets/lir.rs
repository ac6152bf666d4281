//! Loop IR text: parse (which verifies every access in bounds); what
//! parses must print.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = lopper_ir::loops::parse_lir(text) {
            let _ = lopper_ir::loops::print_lir(&m);
        }
    }
});
