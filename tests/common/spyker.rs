//! Reading Spyker's reference vectors (tests/vectors/spyker/, see its README) for
//! `tests/spyker_input.rs` and `tests/spyker_layer.rs`.

use serde_json::Value;
use snnc::ir::kernel::Program;

/// `tests/vectors/spyker/NAME.json`.
pub fn vectors(name: &str) -> Value {
    let path = super::root().join(format!("tests/vectors/spyker/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A nested JSON list, flattened row-major, as f32 (the files print f32 values exactly).
pub fn flat(v: &Value) -> Vec<f32> {
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            other => panic!("not a number: {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// The dimensions of a nested JSON list.
pub fn dims(v: &Value) -> Vec<usize> {
    let mut d = Vec::new();
    let mut at = v;
    while let Value::Array(items) = at {
        d.push(items.len());
        at = &items[0];
    }
    d
}

/// Compiles `src`; a diagnostic panics with its location.
pub fn compile(src: &str) -> Program {
    super::compile_str(src).unwrap_or_else(|(d, at)| panic!("{at}: {}", d.message))
}
