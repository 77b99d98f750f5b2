//! A kernel build that fails leaves nothing in the cache (issue 18: the failed build
//! directory stayed there). Its own test binary: it points `SNNC_RUSTC` at a compiler that
//! always fails, which would break any other build in the same process.

#![cfg(unix)]

#[test]
fn a_failed_build_leaves_no_directory_in_the_cache() {
    let cache = std::env::temp_dir().join(format!("snnc-build-failure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    // `false -vV` prints no version (a key all the same); `false FLAGS... kernels.rs` fails.
    std::env::set_var("SNNC_RUSTC", "false");
    let err = snnc::build::build_cdylib("pub fn f() {}", Some(&cache)).unwrap_err();
    assert!(
        err.message
            .starts_with("rustc failed on the generated kernels"),
        "{}",
        err.message
    );
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
    std::fs::remove_dir_all(&cache).unwrap();
}
