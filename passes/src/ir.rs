//! The IR a pipeline holds at each point: the graph, or the loop module
//! after `lower-to-loops`.

use lopper_ir::graph::{print_gir, verify};
use lopper_ir::loops::{print_lir, verify_module, Module};
use lopper_ir::Graph;

/// The IR between two passes.
#[derive(Clone, Debug)]
pub enum Ir {
    /// Graph IR (`.gir`).
    Graph(Graph),
    /// Loop IR (`.lir`).
    Loops(Module),
}

impl Ir {
    /// The IR as text.
    pub fn print(&self) -> String {
        match self {
            Ir::Graph(g) => print_gir(g),
            Ir::Loops(m) => print_lir(m),
        }
    }

    /// The file extension of its text form.
    pub fn extension(&self) -> &'static str {
        match self {
            Ir::Graph(_) => "gir",
            Ir::Loops(_) => "lir",
        }
    }

    /// Which IR this is, for messages.
    pub fn stage(&self) -> &'static str {
        match self {
            Ir::Graph(_) => "the graph IR",
            Ir::Loops(_) => "the loop IR",
        }
    }

    /// Runs the verifier of this IR.
    pub fn verify(&self) -> Result<(), String> {
        let join = |v: Vec<String>| v.join("; ");
        match self {
            Ir::Graph(g) => verify(g).map_err(|e| join(e.iter().map(|e| e.to_string()).collect())),
            Ir::Loops(m) => {
                verify_module(m).map_err(|e| join(e.iter().map(|e| e.to_string()).collect()))
            }
        }
    }
}
