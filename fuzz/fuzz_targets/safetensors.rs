//! Weights files: every tensor the header names, read as lopper reads
//! params (dtype, shape and byte checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let names: Vec<String> = match safetensors::SafeTensors::deserialize(data) {
        Ok(st) => st.names().into_iter().map(str::to_string).collect(),
        Err(_) => vec!["x".to_string()],
    };
    for name in names {
        let _ = lopper_ir::graph::weights::read_tensor(data, "fuzz.safetensors", &name);
    }
});
