//! The compiler's layers depend one way: `ir/` is the bottom (it knows neither the syntax
//! tree, nor the passes, nor the back ends), `front/` builds the syntax tree on it,
//! `passes/` turn syntax into IR and IR into kernels, `back/` prints kernels. A use of a
//! higher layer from a lower one (outside `#[cfg(test)]` code) fails here with its
//! file:line.

use std::path::{Path, PathBuf};

/// Each layer and the crate modules it may name (`diag` is the shared diagnostics).
const LAYERS: &[(&str, &[&str])] = &[
    ("ir", &["ir", "diag"]),
    ("front", &["front", "ir", "diag"]),
    ("passes", &["passes", "front", "ir", "diag"]),
    ("back", &["back", "ir", "diag"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate modules `text` names as `crate::NAME`, with their 1-based line, up to its
/// unit tests (which may drive the whole compiler).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name));
            rest = &rest[at + 7..];
        }
    }
    out
}

#[test]
fn layers_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (layer, allowed) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        files.sort();
        assert!(!files.is_empty(), "no sources under src/{layer}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (line, name) in crate_paths(&text) {
                if !allowed.contains(&name.as_str()) {
                    let rel = f.strip_prefix(&src).unwrap().display();
                    bad.push(format!("src/{rel}:{line}: `{layer}` uses `crate::{name}`"));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "layering broken (allowed: {LAYERS:?}):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scan_sees_uses_and_stops_at_unit_tests() {
    let text = "use crate::ir::net::Module;\nfn f() { crate::passes::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::Compiler; }\n";
    assert_eq!(
        crate_paths(text),
        vec![(1, "ir".to_string()), (2, "passes".to_string())]
    );
}
