//! Loading generated kernels from a cdylib: the happy path (a library built here with rustc),
//! and every failure as an error value.

mod common;
use common::*;
use snn_runtime::plan::*;
use snn_runtime::{KernelTable, RuntimeError, Session, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

const SRC: &str = r#"
#[repr(C)]
pub struct KernelArgs {
    bufs: *const *mut f32,
    params: *const f32,
    t_len: usize,
    t_step: usize,
    batch: usize,
    features: usize,
    lo: usize,
    hi: usize,
}

#[no_mangle]
pub extern "C" fn snn_abi_version() -> u32 { ABI }

/// y = x * params[0] over the whole sequence.
#[no_mangle]
pub unsafe extern "C" fn snn_scale(a: *const KernelArgs) {
    let a = &*a;
    let x = *a.bufs;
    let y = *a.bufs.add(1);
    let p = *a.params;
    let row = a.batch * a.features;
    for t in 0..a.t_len {
        for i in a.lo..a.hi {
            *y.add(t * row + i) = *x.add(t * row + i) * p;
        }
    }
}
"#;

/// Builds the test kernel library with the given ABI version; `None` if rustc is missing.
fn build_lib(dir: &Path, abi: u32) -> Option<PathBuf> {
    let src = dir.join(format!("k{abi}.rs"));
    std::fs::write(&src, SRC.replace("ABI", &abi.to_string())).unwrap();
    let out = dir.join(format!(
        "{}k{abi}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .ok()?;
    assert!(
        status.success(),
        "rustc failed to build the test kernel library"
    );
    Some(out)
}

fn scale_plan(symbol: &str) -> Plan {
    let mut p = plan("scale");
    p.buffers = vec![buf("x", Extent::Seq, 5, 0), buf("y", Extent::Seq, 5, 1)];
    p.params = vec![ParamDecl {
        name: "scale.k".into(),
        value: 3.0,
        check: ParamCheck::Any,
    }];
    p.inputs = vec![InputDecl {
        name: "x".into(),
        buffer: 0,
        shape: vec![5],
        time_varying: true,
    }];
    p.outputs = vec![OutputDecl {
        name: "y".into(),
        kind: OutputKind::Trace,
        buffer: 1,
        shape: vec![5],
    }];
    p.kernels = vec![KernelDecl {
        symbol: symbol.into(),
        arity: 2,
        weights: vec![],
    }];
    p.ops = vec![Op::Launch {
        kernel: 0,
        groups: vec![LaunchGroup {
            args: vec![0, 1],
            weights: vec![],
            params: 0,
            features: 5,
        }],
        time: LaunchTime::Seq,
    }];
    fix_slots(&mut p);
    p
}

#[test]
fn load_library_and_run() {
    let dir = temp_dir("kernels");
    let Some(lib) = build_lib(&dir, KERNEL_ABI_VERSION) else {
        eprintln!("rustc not found: skipping the kernel-library test");
        return;
    };
    let plan = scale_plan("snn_scale");
    let table = KernelTable::load(&lib, &plan).unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(table.name(0), Some("snn_scale"));
    assert_eq!(table.source(), Some(lib.as_path()));
    let mut s = Session::new(plan, table).unwrap();
    let x = Tensor::new(vec![2, 3, 5], rand_vec(30, 1, -1.0, 1.0)).unwrap();
    let y = s.run_output(std::slice::from_ref(&x), 2, 3, "y").unwrap();
    let want: Vec<f32> = x.data.iter().map(|v| v * 3.0).collect();
    assert_eq!(y.data, want);
    s.set_param("scale.k", -0.5).unwrap();
    let y = s.run_output(std::slice::from_ref(&x), 2, 3, "y").unwrap();
    let want: Vec<f32> = x.data.iter().map(|v| v * -0.5).collect();
    assert_eq!(y.data, want);
    // Large batch: chunked across threads.
    let xb = Tensor::new(vec![4, 4096, 5], rand_vec(4 * 4096 * 5, 2, -1.0, 1.0)).unwrap();
    let y = s
        .run_output(std::slice::from_ref(&xb), 4, 4096, "y")
        .unwrap();
    assert!(y.data.iter().zip(&xb.data).all(|(y, x)| *y == x * -0.5));

    // The plan names a symbol the library lacks.
    let e = KernelTable::load(&lib, &scale_plan("snn_missing")).unwrap_err();
    assert!(matches!(e, RuntimeError::KernelSymbol { .. }));
    let e = e.to_string();
    assert!(
        e.contains("`snn_missing`") && e.contains(&lib.display().to_string()),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_abi_version_is_refused() {
    let dir = temp_dir("kernels-abi");
    let Some(lib) = build_lib(&dir, KERNEL_ABI_VERSION + 41) else {
        return;
    };
    let e = KernelTable::load(&lib, &scale_plan("snn_scale")).unwrap_err();
    assert!(matches!(e, RuntimeError::KernelAbi { .. }));
    let e = e.to_string();
    assert!(
        e.contains(&format!("version {}", KERNEL_ABI_VERSION + 41))
            && e.contains(&format!("version {KERNEL_ABI_VERSION}")),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_and_bogus_libraries_are_errors() {
    let dir = temp_dir("kernels-bogus");
    let plan = scale_plan("snn_scale");
    let e = KernelTable::load(&dir.join("libnothing.so"), &plan).unwrap_err();
    assert!(matches!(e, RuntimeError::KernelLibrary { .. }));
    assert!(e.to_string().contains("libnothing.so") && e.to_string().contains("does not exist"));
    let bogus = dir.join("libbogus.so");
    std::fs::write(&bogus, b"not a shared library").unwrap();
    let e = KernelTable::load(&bogus, &plan).unwrap_err().to_string();
    assert!(e.contains("libbogus.so"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
