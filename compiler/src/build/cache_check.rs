//! The kernel cache checks itself: each published entry carries a manifest with the library's
//! length and SHA-256, and a library is only handed to the loader once it matches (a
//! truncated shared library mapped into the process dies with SIGBUS, not an error).
//! Temporary build directories of processes that are gone are swept away.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The manifest beside each cached library.
pub const MANIFEST: &str = "manifest.txt";
const HEADER: &str = "snnc kernel cache 1";

/// The manifest of the library `lib`: its length and SHA-256.
fn describe(lib: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(lib)?;
    Ok(format!(
        "{HEADER}\nlen {}\nsha256 {}\n",
        bytes.len(),
        hex(&Sha256::digest(&bytes))
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records the length and checksum of `lib` in the manifest of `entry` (before publishing).
pub fn write_manifest(entry: &Path, lib: &Path) -> std::io::Result<()> {
    std::fs::write(entry.join(MANIFEST), describe(lib)?)
}

/// Why the cached `lib` in `entry` must not be loaded, or `None` when it matches its manifest.
pub fn problem(entry: &Path, lib: &Path) -> Option<String> {
    let size = match std::fs::metadata(lib) {
        Ok(m) => m.len(),
        Err(_) => return Some("the library is missing".into()),
    };
    let Ok(text) = std::fs::read_to_string(entry.join(MANIFEST)) else {
        return Some(format!("size {size}, no manifest"));
    };
    let mut lines = text.lines();
    let field = |line: Option<&str>, name: &str| {
        line.and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_string)
    };
    let (Some(HEADER), Some(len), Some(sum)) = (
        lines.next(),
        field(lines.next(), "len").and_then(|v| v.parse::<u64>().ok()),
        field(lines.next(), "sha256"),
    ) else {
        return Some(format!("size {size}, unreadable manifest"));
    };
    if size != len {
        return Some(format!("size {size}, expected {len}"));
    }
    let actual = match std::fs::read(lib) {
        Ok(bytes) => hex(&Sha256::digest(&bytes)),
        Err(e) => return Some(format!("cannot read the library: {e}")),
    };
    (actual != sum).then(|| format!("size {size}, checksum differs"))
}

/// Removes the temporary build directories in `cache` whose process is gone.
pub fn remove_stale_tmp(cache: &Path) {
    snn_runtime::cache_tmp::remove_stale_tmp(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_matches_its_manifest_until_changed() {
        let dir = std::env::temp_dir().join(format!("snnc-cache-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("lib.so");
        assert_eq!(
            problem(&dir, &lib).as_deref(),
            Some("the library is missing")
        );
        std::fs::write(&lib, b"0123456789").unwrap();
        assert_eq!(problem(&dir, &lib).as_deref(), Some("size 10, no manifest"));
        write_manifest(&dir, &lib).unwrap();
        assert_eq!(problem(&dir, &lib), None);
        std::fs::write(&lib, b"01234").unwrap();
        assert_eq!(problem(&dir, &lib).as_deref(), Some("size 5, expected 10"));
        std::fs::write(&lib, b"0123456780").unwrap();
        assert_eq!(
            problem(&dir, &lib).as_deref(),
            Some("size 10, checksum differs")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
