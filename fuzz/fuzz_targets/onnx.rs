//! ONNX models: decode and import any bytes; errors are fine, panics are
//! not. External data is looked up in a folder that does not exist.
#![no_main]

use prost::Message;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(model) = lopper_frontend::onnx::proto::ModelProto::decode(data) {
        let _ =
            lopper_frontend::onnx::import_model(&model, std::path::Path::new("/nonexistent-fuzz"));
    }
});
