//! The model language: parse, build and verify any text; errors are fine,
//! panics are not. Weights paths start in a folder that does not exist.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lopper_frontend::compile_source(text, std::path::Path::new("/nonexistent-fuzz"));
    }
});
