//! NVRTC and ptxas, no GPU needed: every generated kernel and the runtime's library kernels
//! (`kernels/cuda/ops.cuh`) compile with the real NVRTC 13.0, through the runtime's own
//! `snn_runtime::cuda::compile_ptx` (the code path `--device cuda` takes), for `compute_80`
//! and `compute_90`: the PTX an A100 or an H100 driver would get. `ptxas -arch=sm_XX -v` then
//! assembles each PTX as the driver's JIT would; registers, stack and spills of every kernel
//! are printed as a table, and a kernel that spills fails the test.
//!
//! Covered: every model in examples/ and tests/in in the plan variants of
//! tests/equivalence.rs (fused, unfused, step-by-step, unmerged), and the training plans of
//! tests/in/train and examples/yinyang.snn (forward and backward kernels). Programs whose
//! CUDA text is identical are compiled once.
//!
//! The tools: `scripts/fetch-cuda-tools.sh` (run by `scripts/test.sh`, the CI command) unpacks
//! `libnvrtc.so.13` and `ptxas` from NVIDIA's PyPI wheels into `target/cuda-tools/13.0.88`
//! (or `$SNNC_CUDA_TOOLS`). No `LD_LIBRARY_PATH` is needed: the test `dlopen`s that library by
//! its absolute path before the runtime first looks for NVRTC; cudarc then asks for
//! `libnvrtc.so.13` by name and the dynamic loader returns the library already loaded under
//! that soname. Without that directory a libnvrtc on the library path and a `ptxas` on `PATH`
//! (a CUDA toolkit) are used; with no NVRTC at all the test prints `SKIP:` and passes.
//! The PTX files are left in `target/nvrtc-check/` for inspection.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use snnc::Options;

/// The pinned NVRTC/ptxas release (13.0: the PTX version the 580 drivers accept).
const VERSION: &str = "13.0.88";
/// Compute capabilities checked: Ampere (A100) and Hopper (H100).
const ARCHS: [&str; 2] = ["80", "90"];

/// A line on the real stderr: cargo's test harness captures `println!`/`eprintln!` but not
/// direct writes, so SKIP lines and the table show in every `cargo test` run.
fn say(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

fn tools_dir() -> PathBuf {
    std::env::var_os("SNNC_CUDA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("target/cuda-tools").join(VERSION))
}

/// Loads a shared library by absolute path and keeps it loaded for the rest of the process.
#[cfg(target_os = "linux")]
fn preload(path: &Path) -> Result<(), String> {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlerror() -> *const c_char;
    }
    const RTLD_NOW: c_int = 2;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a NUL-terminated path; loading NVIDIA's libraries runs no initialisers
    // that need anything from us. The handle is never closed.
    let handle = unsafe { dlopen(c.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next call.
        let msg = unsafe {
            let e = dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!("dlopen {}: {msg}", path.display()));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn preload(path: &Path) -> Result<(), String> {
    Err(format!("{}: preloading is Linux-only", path.display()))
}

/// Makes NVRTC loadable (see the module docs) and finds ptxas. `Err`: why the test skips.
fn find_tools() -> Result<(String, Option<PathBuf>), String> {
    let dir = tools_dir();
    let lib = dir.join("lib");
    let mut origin = "the library path".to_string();
    if lib.join("libnvrtc.so.13").is_file() {
        // A broken install is a failure, not a skip.
        for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
            preload(&lib.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
        origin = lib.display().to_string();
    }
    if !snn_runtime::cuda::nvrtc_present() {
        return Err(format!(
            "no NVRTC library (neither {} nor libnvrtc.so on the library path); run scripts/fetch-cuda-tools.sh",
            lib.display()
        ));
    }
    let ptxas = [dir.join("bin/ptxas"), PathBuf::from("ptxas")]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    Ok((origin, ptxas))
}

/// One CUDA source to compile: a model in one plan variant, or the library kernels.
struct Unit {
    name: String,
    source: String,
    prelude: bool,
    /// The kernels the plan launches (must all be in the PTX).
    symbols: Vec<String>,
}

fn units() -> Vec<Unit> {
    let base = Options::default();
    let variants = [
        ("default", base.clone()),
        (
            "unfused",
            Options {
                fuse: false,
                ..base.clone()
            },
        ),
        (
            "steps",
            Options {
                force_steps: true,
                ..base.clone()
            },
        ),
        (
            "unfused-steps",
            Options {
                fuse: false,
                force_steps: true,
                ..base.clone()
            },
        ),
        (
            "unmerged",
            Options {
                merge: false,
                ..base.clone()
            },
        ),
    ];
    let mut jobs: Vec<(PathBuf, &str, Options)> = Vec::new();
    for path in common::model_files() {
        for (tag, opts) in &variants {
            jobs.push((path.clone(), tag, opts.clone()));
        }
    }
    let mut train = common::snn_files("tests/in/train");
    train.push(common::root().join("examples/yinyang.snn"));
    train.push(common::root().join("examples/mnist.snn"));
    for path in train {
        let opts = Options {
            train: true,
            ..base.clone()
        };
        jobs.push((path, "train", opts));
    }

    let mut units = vec![Unit {
        name: "runtime ops.cuh".into(),
        source: snn_runtime::cuda::OPS_SOURCE.into(),
        prelude: false,
        symbols: Vec::new(),
    }];
    let mut seen = HashSet::new();
    for (path, tag, opts) in jobs {
        let model = path.file_stem().unwrap().to_string_lossy().into_owned();
        let program = common::compile_file(&path, opts)
            .unwrap_or_else(|e| panic!("{} ({tag}): {e}", path.display()));
        let source = snnc::back::cuda::print_program(&program);
        if !seen.insert(source.clone()) {
            continue;
        }
        units.push(Unit {
            name: format!("{model} ({tag})"),
            source,
            prelude: true,
            symbols: program
                .plan
                .kernels
                .iter()
                .map(|k| k.symbol.clone())
                .collect(),
        });
    }
    units
}

/// What `ptxas -v` says about one function.
#[derive(Clone, Debug, Default, PartialEq)]
struct Usage {
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Parses `ptxas -v` output into (function, usage) in the order reported.
fn parse_ptxas(log: &str) -> Vec<(String, Usage)> {
    let mut out: Vec<(String, Usage)> = Vec::new();
    let quoted = |line: &str| line.split('\'').nth(1).map(str::to_string);
    let number_before = |line: &str, what: &str| -> Option<u32> {
        let head = &line[..line.find(what)?];
        head.split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        let name = if line.contains("Compiling entry function") {
            quoted(line)
        } else {
            line.split("Function properties for ")
                .nth(1)
                .map(|rest| rest.trim().to_string())
        };
        if let Some(name) = name {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name.clone(), Usage::default()));
            }
            // The most recent function is the one the following lines describe.
            let i = out.iter().position(|(n, _)| *n == name).unwrap();
            let entry = out.remove(i);
            out.push(entry);
            continue;
        }
        let Some((_, u)) = out.last_mut() else {
            continue;
        };
        if line.contains("bytes stack frame") {
            u.stack = number_before(line, "bytes stack frame").unwrap_or(0);
            u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("registers") {
            if let Some(r) = number_before(line, "registers") {
                u.registers = r;
            }
        }
    }
    out
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// What one architecture's check found.
struct ArchResult {
    /// Per unit, the functions ptxas reported (empty without ptxas or after an error).
    usage: Vec<Vec<(String, Usage)>>,
    failures: Vec<String>,
    /// NVRTC's version line from the PTX header.
    version: String,
}

/// One architecture: NVRTC then ptxas for every unit.
fn check_arch(units: &[Unit], arch: &str, ptxas: Option<&Path>, out_dir: &Path) -> ArchResult {
    let headers = [(snnc::back::cuda::PRELUDE_NAME, snnc::back::cuda::PRELUDE)];
    let mut usage = Vec::new();
    let mut failures = Vec::new();
    let mut version = String::new();
    for unit in units {
        let hdrs: &[(&str, &str)] = if unit.prelude { &headers } else { &[] };
        let ptx =
            match snn_runtime::cuda::compile_ptx(&unit.source, hdrs, &format!("compute_{arch}")) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{} (compute_{arch}): {e}", unit.name));
                    usage.push(Vec::new());
                    continue;
                }
            };
        if version.is_empty() {
            if let Some(l) = ptx.lines().find(|l| l.contains("compilation tools")) {
                version = l.trim_start_matches('/').trim().to_string();
            }
        }
        for s in &unit.symbols {
            if !ptx.contains(&format!(".entry {s}(")) {
                failures.push(format!(
                    "{} (compute_{arch}): kernel {s} missing from the PTX",
                    unit.name
                ));
            }
        }
        let Some(ptxas) = ptxas else {
            usage.push(Vec::new());
            continue;
        };
        let file = out_dir.join(format!("{}.sm_{arch}.ptx", slug(&unit.name)));
        std::fs::write(&file, &ptx).unwrap();
        let out = Command::new(ptxas)
            .arg(format!("-arch=sm_{arch}"))
            .arg("-v")
            .arg("-o")
            .arg("/dev/null")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failures.push(format!(
                "{} (sm_{arch}): ptxas failed on {}:\n{log}",
                unit.name,
                file.display()
            ));
            usage.push(Vec::new());
            continue;
        }
        let funcs = parse_ptxas(&log);
        for s in &unit.symbols {
            if !funcs.iter().any(|(n, _)| n == s) {
                failures.push(format!(
                    "{} (sm_{arch}): ptxas reported nothing for kernel {s}:\n{log}",
                    unit.name
                ));
            }
        }
        for (n, u) in &funcs {
            if u.spill_stores > 0 || u.spill_loads > 0 {
                failures.push(format!(
                    "{}: kernel {n} spills on sm_{arch} ({} bytes spill stores, {} bytes spill loads, {} registers)",
                    unit.name, u.spill_stores, u.spill_loads, u.registers
                ));
            }
        }
        usage.push(funcs);
    }
    ArchResult {
        usage,
        failures,
        version,
    }
}

/// One line of the table: a function of a program and its usage per architecture.
struct Row<'a> {
    program: &'a str,
    function: &'a str,
    usage: Vec<Option<&'a Usage>>,
}

impl Row<'_> {
    fn max_regs(&self) -> u32 {
        self.usage
            .iter()
            .flatten()
            .map(|u| u.registers)
            .max()
            .unwrap_or(0)
    }

    fn spilled(&self) -> u32 {
        self.usage
            .iter()
            .flatten()
            .map(|u| u.spill_stores + u.spill_loads)
            .sum()
    }
}

fn table(rows: &[&Row]) -> String {
    let mut t = format!("  {:<24} {:<30}", "kernel", "program");
    for a in ARCHS {
        t.push_str(&format!(" {:>18}", format!("sm_{a} regs/stack")));
    }
    t.push_str("  spill bytes\n");
    for r in rows {
        t.push_str(&format!("  {:<24} {:<30}", r.function, r.program));
        for u in &r.usage {
            let cell = u.map_or("-".to_string(), |u| {
                format!("{} / {}", u.registers, u.stack)
            });
            t.push_str(&format!(" {cell:>18}"));
        }
        t.push_str(&format!("  {}\n", r.spilled()));
    }
    t
}

#[test]
fn ptxas_parser() {
    let log = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'snn_k0_s' for 'sm_90'\n\
        ptxas info    : Function properties for snn_k0_s\n\
        \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
        ptxas info    : Used 40 registers, used 0 barriers, 432 bytes cmem[0]\n\
        ptxas info    : Compiling entry function 'snn_k1' for 'sm_90'\n\
        ptxas info    : Function properties for snn_k1\n\
        \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
        ptxas info    : Used 12 registers, used 0 barriers, 400 bytes cmem[0]\n";
    let f = parse_ptxas(log);
    assert_eq!(
        f,
        vec![
            (
                "snn_k0_s".to_string(),
                Usage {
                    registers: 40,
                    stack: 8,
                    spill_stores: 4,
                    spill_loads: 12
                }
            ),
            (
                "snn_k1".to_string(),
                Usage {
                    registers: 12,
                    ..Usage::default()
                }
            ),
        ]
    );
}

/// The check can fail: a kernel held to 32 registers by `__launch_bounds__` spills, and the
/// same path as the real test reports it.
#[test]
fn spilling_kernel_is_caught() {
    let Ok((_, Some(ptxas))) = find_tools() else {
        return; // the main test prints the SKIP line
    };
    let source = r#"
extern "C" __global__ void __launch_bounds__(1024, 2)
spill(const float* __restrict__ x, float* __restrict__ y) {
    float acc[48];
    #pragma unroll
    for (int i = 0; i < 48; i++) acc[i] = x[threadIdx.x + i * 1024];
    #pragma unroll
    for (int j = 0; j < 8; j++) {
        #pragma unroll
        for (int i = 0; i < 48; i++) acc[i] = acc[i] * acc[(i + j + 1) % 48] + 1.0f;
    }
    float s = 0.0f;
    #pragma unroll
    for (int i = 0; i < 48; i++) s += acc[i] * (float)i;
    y[threadIdx.x] = s;
}
"#;
    let unit = Unit {
        name: "spill self-check".into(),
        source: source.into(),
        prelude: false,
        symbols: vec!["spill".into()],
    };
    let out_dir = common::root().join("target/nvrtc-check");
    std::fs::create_dir_all(&out_dir).unwrap();
    let r = check_arch(&[unit], "90", Some(&ptxas), &out_dir);
    let failures = r.failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("spill self-check: kernel spill spills on sm_90"),
        "{}",
        failures[0]
    );
    let (_, u) = &r.usage[0][0];
    assert!(u.spill_stores > 0 && u.registers <= 32, "{u:?}");
}

#[test]
fn generated_kernels_compile_with_nvrtc_without_spills() {
    let (origin, ptxas) = match find_tools() {
        Ok(t) => t,
        Err(why) => {
            say(&format!("SKIP: NVRTC checks (tests/nvrtc.rs): {why}"));
            return;
        }
    };
    let start = std::time::Instant::now();
    let units = units();
    let out_dir = common::root().join("target/nvrtc-check");
    std::fs::create_dir_all(&out_dir).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ARCHS
            .iter()
            .map(|arch| {
                let (units, ptxas, out_dir) = (&units, ptxas.as_deref(), &out_dir);
                s.spawn(move || check_arch(units, arch, ptxas, out_dir))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let seconds = start.elapsed().as_secs_f64();
    let version = results
        .iter()
        .map(|r| r.version.as_str())
        .find(|v| !v.is_empty())
        .unwrap_or("version unknown");
    let generated: usize = units.iter().map(|u| u.symbols.len()).sum();
    say(&format!(
        "NVRTC ({version}) from {origin}: {} programs ({generated} generated kernels and the \
         runtime's ops.cuh) compiled for compute_{}, NVRTC + ptxas {seconds:.1} s",
        units.len(),
        ARCHS.join(" and compute_")
    ));
    let mut failures: Vec<String> = results.iter().flat_map(|r| r.failures.clone()).collect();
    // cudarc tries `libnvrtc.so` before `libnvrtc.so.13`: a toolkit's unversioned library on
    // the loader path would win over the preloaded one.
    if origin != "the library path" && !version.contains(&format!("V{VERSION}")) {
        failures.push(format!(
            "NVRTC {VERSION} from {origin} was preloaded but the PTX says `{version}`: another \
             libnvrtc on the library path was used"
        ));
    }
    let Some(ptxas) = &ptxas else {
        say("SKIP: ptxas register/spill check: no ptxas (run scripts/fetch-cuda-tools.sh)");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    };

    // One row per (program, function): the usage on each architecture.
    let mut rows: Vec<Row> = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let mut names: Vec<&str> = Vec::new();
        for r in &results {
            for (n, _) in &r.usage[i] {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        names.sort();
        for name in names {
            let per_arch = results
                .iter()
                .map(|r| r.usage[i].iter().find(|(n, _)| n == name).map(|(_, u)| u))
                .collect();
            rows.push(Row {
                program: &unit.name,
                function: name,
                usage: per_arch,
            });
        }
    }
    // The whole table goes to the captured output (shown on failure or with --nocapture);
    // the visible summary lists the kernels with the most registers and any that spill.
    println!("{}", table(&rows.iter().collect::<Vec<_>>()));
    let mut top: Vec<&Row> = rows.iter().collect();
    top.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.spilled()),
            std::cmp::Reverse(r.max_regs()),
        )
    });
    let spilling = rows.iter().filter(|r| r.spilled() > 0).count();
    let shown = spilling.max(6).min(top.len());
    say(&format!(
        "ptxas -v ({}): {} functions on sm_{}, {spilling} spilling; the {} with the most registers \
         (all rows: cargo test --test nvrtc -- --nocapture):\n{}",
        ptxas.display(),
        rows.len(),
        ARCHS.join(" and sm_"),
        shown,
        table(&top[..shown]).trim_end()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The CUDA device's disk cache of PTX (no GPU needed): the first compile writes
/// `ptx/<hash>.ptx`, the second reads it back unchanged; another architecture or source is
/// another file; a damaged file is recompiled and replaced, never handed to the driver.
#[test]
fn ptx_disk_cache_round_trips() {
    use snn_runtime::cuda::{compile_ptx_cached, ptx_cache_file, PRELUDE, PRELUDE_NAME};
    if let Err(why) = find_tools() {
        say(&format!("SKIP nvrtc::ptx_disk_cache_round_trips: {why}"));
        return;
    }
    let dir = common::root().join("target/nvrtc-check/ptx-cache-test");
    let _ = std::fs::remove_dir_all(&dir);
    let src = "#include \"snn_prelude.cuh\"\nextern \"C\" __global__ void k(float* x) { x[threadIdx.x] = snn_f32(0x3f800000u); }\n";
    let headers = [(PRELUDE_NAME, PRELUDE)];
    let (first, cached) = compile_ptx_cached(&dir, src, &headers, "compute_90").unwrap();
    assert!(!cached && first.contains(".entry k"));
    let file = ptx_cache_file(&dir, src, &headers, "compute_90").unwrap();
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with(&first) && stored.len() > first.len());
    let (again, cached) = compile_ptx_cached(&dir, src, &headers, "compute_90").unwrap();
    assert!(cached && again == first);
    // Other keys, other files.
    let other_arch = ptx_cache_file(&dir, src, &headers, "compute_80").unwrap();
    let other_src = ptx_cache_file(&dir, &src.replace("x[", "x[1 + "), &headers, "compute_90");
    assert!(other_arch != file && other_src.unwrap() != file);
    let (sm80, cached) = compile_ptx_cached(&dir, src, &headers, "compute_80").unwrap();
    assert!(!cached && sm80.contains(".target sm_80"));
    // A file cut short anywhere is not used: compiled again and replaced.
    for cut in [stored.len() / 3, stored.len() - 2] {
        std::fs::write(&file, &stored[..cut]).unwrap();
        let (fresh, cached) = compile_ptx_cached(&dir, src, &headers, "compute_90").unwrap();
        assert!(!cached && fresh == first, "cut at {cut}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), stored);
    }
    // Only finished files are left: no temporaries.
    let names: Vec<String> = std::fs::read_dir(dir.join("ptx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".ptx")), "{names:?}");
}
