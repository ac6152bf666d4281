//! Loops whose bounds are loads of constant index arrays (CSR): the loop
//! interpreter, the Cranelift JIT and a shared object against a dense
//! product computed here.

mod common;

use std::collections::{BTreeMap, HashMap};

#[test]
fn csr_kernel_matches_the_dense_product() {
    let text =
        std::fs::read_to_string(common::root().join("tests/filetests/verify-loops/sparse.lir"))
            .unwrap();
    let case = text.split("\n// -----\n").next().unwrap();
    let module = lopper_ir::loops::parse_lir(case).unwrap_or_else(|d| panic!("{d:?}"));
    // The same matrix, dense, row by row.
    let dense: [[f32; 6]; 4] = [
        [1.0, 0.0, 0.0, 0.0, 0.0, 2.0],
        [0.0; 6],
        [0.0, -1.0, 0.5, 0.0, 3.0, 0.0],
        [0.0, 0.0, 0.0, -2.0, 0.0, 0.0],
    ];
    let dir = common::scratch("sparse");
    std::fs::write(dir.join("csr.lir"), case).unwrap();
    let (code, _, err) = common::lopper(&dir, &["compile", "csr.lir", "-o", "libcsr.so"]);
    assert_eq!(code, 0, "{err}");
    let shared = lopper_runtime::SharedModel::open(&dir.join("libcsr.so")).unwrap();
    let jit = lopper_backends::cranelift::compile_jit(&module).unwrap();
    for n in [1usize, 5] {
        let x = lopper_runtime::random_tensor(vec![n, 6], n as u64);
        let mut y = vec![0.0f32; n * 4];
        for i in 0..n {
            for (j, row) in dense.iter().enumerate() {
                y[i * 4 + j] = (0..6).map(|k| row[k] * x.data[i * 6 + k]).sum();
            }
        }
        let want = lopper_ir::Tensor::new(vec![n, 4], y).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        let sizes = BTreeMap::from([("n".to_string(), n)]);
        let runs = [
            lopper_runtime::run_module(&module, &inputs, &BTreeMap::new()).unwrap(),
            jit.run(&inputs, &sizes).unwrap(),
            shared.run(&inputs, &BTreeMap::new()).unwrap(),
        ];
        for (engine, got) in ["loop interpreter", "jit", "shared object"]
            .iter()
            .zip(&runs)
        {
            common::assert_close(
                &format!("csr n={n} ({engine})"),
                &got[0].1,
                &want,
                1e-6,
                1e-6,
            );
        }
    }
}
