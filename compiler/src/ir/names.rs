//! The one name mangler: how names from a model (nodes, states, parameters, buffers)
//! become identifiers in generated code, for both back ends and for the kernel symbols
//! `passes::lower` gives.
//!
//! An identifier is ASCII `[A-Za-z0-9_]` with no run of `_` (C++ reserves names with `__`,
//! and one rule for both back ends keeps their code readable side by side). A prefix letter
//! and an index keep each name unique and off every keyword of Rust and CUDA C (a state
//! called `type` or `float` is `l3_type`, `l3_float`).

/// `name` with every character outside `[A-Za-z0-9_]` replaced by `_`, runs of `_` collapsed.
pub fn part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out
}

/// A local name in a generated kernel: `{prefix}{index}_{name}`, e.g. `b0_x`, `c1_v`, `l3_I`.
pub fn local(prefix: &str, index: usize, name: &str) -> String {
    part(&format!("{prefix}{index}_{name}"))
}

/// A kernel's exported symbol: `snn_k{index}_{name}{suffix}`, lowercase (a C and a Rust
/// function name); the index makes it unique, the name is for people reading a profile.
pub fn kernel_symbol(index: usize, name: &str, suffix: &str) -> String {
    part(&format!("snn_k{index}_{name}{suffix}")).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_name() {
        assert_eq!(part("a.b__c"), "a_b_c");
        assert_eq!(local("l", 3, "float"), "l3_float");
        assert_eq!(local("l", 0, "_x"), "l0_x");
        assert_eq!(local("c", 1, "v'"), "c1_v_");
        assert_eq!(local("l", 2, "I"), "l2_I");
        assert_eq!(
            kernel_symbol(4, "s1.dense", "_fire"),
            "snn_k4_s1_dense_fire"
        );
        assert_eq!(kernel_symbol(0, "Out_", "_charge"), "snn_k0_out_charge");
    }
}
