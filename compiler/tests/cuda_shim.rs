//! The CUDA back end on CPU-only CI: the generated CUDA C of every model runs on the host
//! through kernels/cuda/host_shim.h, inside the real plan executor, and must give the same
//! outputs as the generated Rust kernels: spikes and counts identical, traces within 1e-5
//! relative (in practice bit for bit). The training plans of tests/in/train also run their
//! backward kernels through the shim and must give the same weight gradients. Needs a C++20
//! compiler (`$CXX`, else g++, clang++,
//! c++); without one the tests print a SKIP line and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use snn_runtime::rng::{philox4x32_10, uniform01};
use snn_runtime::{KernelTable, Session, Tensor};
use snnc::back::cuda;
use snnc::ir::kernel::Program;
use snnc::{Compiler, Options};

#[allow(dead_code, clippy::all)]
mod rust_prelude {
    include!("../../kernels/rust/prelude.rs");
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kernels_dir() -> PathBuf {
    workspace().join("kernels").join("cuda")
}

fn work_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cuda_shim")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The C++ compiler to use, or None (the caller skips).
fn cxx() -> Option<String> {
    snn_runtime::cuda::shim::find_cxx()
}

fn skip(test: &str) {
    println!("SKIP cuda_shim::{test}: no C++ compiler found (set CXX, or install g++)");
    eprintln!("SKIP cuda_shim::{test}: no C++ compiler found (set CXX, or install g++)");
}

/// Compiles `src` (in `dir`) with the shim's flags; `shared` builds a shared library.
fn build(cxx: &str, dir: &Path, src: &str, out: &str, shared: bool) -> PathBuf {
    let out = dir.join(out);
    let mut cmd = Command::new(cxx);
    cmd.args([
        "-std=c++20",
        "-O2",
        "-ffp-contract=off",
        "-Wall",
        "-Wno-unused-variable",
    ])
    .arg("-I")
    .arg(kernels_dir())
    .arg("-I")
    .arg(dir);
    if shared {
        cmd.args(["-shared", "-fPIC"]);
    }
    cmd.arg("-o").arg(&out).arg(dir.join(src));
    let o = cmd.output().expect("run the C++ compiler");
    assert!(
        o.status.success(),
        "{cxx} failed on {}:\n{}",
        dir.join(src).display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A xorshift64 source of uniforms in `[0, 1)` (deterministic test data).
fn xorshift(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Runs a shim driver `exe IN OUT` on `words` (as u64) then `arrays` (as f32), all
/// little-endian in one input file, and returns the f32 it wrote.
fn run_driver(exe: &Path, dir: &Path, words: &[usize], arrays: &[&Vec<f32>]) -> Vec<f32> {
    let mut bytes = Vec::new();
    for &v in words {
        bytes.extend((v as u64).to_le_bytes());
    }
    for v in arrays {
        bytes.extend(v.iter().flat_map(|f| f.to_le_bytes()));
    }
    let (inp, outp) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&inp, bytes).unwrap();
    let st = Command::new(exe).arg(&inp).arg(&outp).status().unwrap();
    assert!(st.success(), "{}: {st}", exe.display());
    std::fs::read(&outp)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn model_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["examples", "tests/in"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "snn"))
            .collect();
        v.sort();
        files.extend(v);
    }
    files
}

fn compile_file(path: &Path) -> Program {
    compile_with(path, Options::default())
}

/// `path` compiled with `opts`; a diagnostic fails the test with its rendering.
fn compile_with(path: &Path, opts: Options) -> Program {
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_file(path)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    c.compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)))
}

/// `snn_uniform` of the CUDA prelude, compiled for the host, draws the documented stream
/// bit for bit (and so does the Rust prelude's); literals read back exactly.
#[test]
fn prelude_uniform_matches_rust() {
    let Some(cxx) = cxx() else {
        return skip("prelude_uniform_matches_rust");
    };
    let cases: Vec<(u32, u64, u32)> = vec![
        (0, 0, 0),
        (7, 0, 0),
        (7, 1, 0),
        (7, 2, 0),
        (7, 3, 0),
        (7, 4, 0),
        (7, 0, 1),
        (7, 783, 24),
        (7, 782, 24),
        (7, 781, 24),
        (0xDEAD_BEEF, 123_456_789, 99),
        (u32::MAX, u64::MAX, u32::MAX),
        (42, (1u64 << 32) + 5, 3),
        (1_065_353_216, 9_999_999_999, 65_536),
    ];
    let mut src = String::from("#include \"snn_prelude.cuh\"\n#include <cstdio>\nint main() {\n");
    for (seed, idx, t) in &cases {
        src.push_str(&format!(
            "    std::printf(\"%08x\\n\", snn_bits(snn_uniform({seed}u, {idx}ull, {t}u)));\n"
        ));
    }
    // Exact literals: every f32_literal reads back to the same bits.
    let lits = [
        0.1f32,
        -0.1,
        1.0 / 3.0,
        -0.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        16_777_216.0,
        16_777_217.0f32,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.95,
        1e-3,
    ];
    for v in &lits {
        src.push_str(&format!(
            "    std::printf(\"%08x\\n\", snn_bits({}));\n",
            cuda::f32_literal(*v)
        ));
    }
    src.push_str("    return 0;\n}\n");
    let dir = work_dir("prelude");
    std::fs::write(dir.join("uniform.cpp"), src).unwrap();
    let exe = build(&cxx, &dir, "uniform.cpp", "uniform", false);
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let got: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| u32::from_str_radix(l, 16).unwrap())
        .collect();
    // The documented stream (word idx % 4 of Philox4x32-10 at counter (idx / 4, t, 0), key
    // (seed, 0x5EED5EED)), by the runtime's Philox; the Rust prelude must agree too.
    let mut want: Vec<u32> = cases
        .iter()
        .map(|&(seed, idx, t)| {
            let q = idx / 4;
            let r = philox4x32_10([q as u32, (q >> 32) as u32, t, 0], [seed, 0x5EED_5EED]);
            let u = uniform01(r[(idx % 4) as usize]).to_bits();
            let rust = rust_prelude::snn_uniform(seed, idx as usize, t as usize).to_bits();
            assert_eq!(rust, u, "Rust prelude, seed {seed} idx {idx} t {t}");
            u
        })
        .collect();
    want.extend(lits.iter().map(|v| v.to_bits()));
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "case {i}: C++ {g:08x}, Rust {w:08x}");
    }
}

/// The runtime's hand-written event-driven kernels (`kernels/cuda/ops.cuh`:
/// `snn_transpose`, `snn_spike_gemm`, `snn_spike_gemm_dw`) run through the shim and give the
/// CPU device's results (`runtime/src/cpu/spike.rs`) bit for bit on 0/1 spikes: both sum
/// the old value (+ bias) first, then the active inputs in increasing order.
#[test]
fn ops_spike_gemm_matches_cpu() {
    use snn_runtime::cpu::spike;
    let Some(cxx) = cxx() else {
        return skip("ops_spike_gemm_matches_cpu");
    };
    let dir = work_dir("ops_spike");
    let src = r#"#include "host_shim.h"
#include <cstdio>
#include <cstring>
#include <vector>
#include "ops.cuh"
static dim3 grid(snn_u64 n) { return dim3((unsigned)((n + 255) / 256)); }
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    unsigned long long d[4];
    if (std::fread(d, 8, 4, f) != 4) return 2;
    const snn_u64 rows = d[0], k = d[1], n = d[2], read_dst = d[3];
    std::vector<float> x(rows * k), w(n * k), y(rows * n), dy(rows * n), dw(n * k), wt(n * k);
    for (auto* v : {&x, &w, &y, &dy, &dw})
        if (std::fread(v->data(), 4, v->size(), f) != v->size()) return 3;
    std::fclose(f);
    snn_shim_launch(snn_transpose, grid(n * k), dim3(256), w.data(), wt.data(), n, k);
    snn_shim_launch(snn_spike_gemm, grid(rows * n), dim3(256), x.data(), wt.data(), y.data(),
                    rows, k, n, read_dst);
    snn_shim_launch(snn_spike_gemm_dw, grid(n * k), dim3(256), x.data(), dy.data(), dw.data(),
                    rows, k, n);
    FILE* o = std::fopen(argv[2], "wb");
    std::fwrite(y.data(), 4, y.size(), o);
    std::fwrite(dw.data(), 4, dw.size(), o);
    std::fclose(o);
    return 0;
}
"#;
    std::fs::write(dir.join("spike.cpp"), src).unwrap();
    let exe = build(&cxx, &dir, "spike.cpp", "spike", false);
    let mut rnd = xorshift(0x2545f4914f6cdd1du64);
    for (rows, k, n) in [(37, 53, 70), (9, 200, 130), (4, 3, 1)] {
        for rate in [0.0f32, 0.05, 0.5, 1.0] {
            for accumulate in [false, true] {
                let x: Vec<f32> = (0..rows * k)
                    .map(|_| if rnd() < rate { 1.0 } else { 0.0 })
                    .collect();
                let w: Vec<f32> = (0..n * k).map(|_| rnd() - 0.5).collect();
                let y0: Vec<f32> = (0..rows * n).map(|_| rnd() - 0.5).collect();
                let dy: Vec<f32> = (0..rows * n).map(|_| rnd() - 0.5).collect();
                let dw0: Vec<f32> = (0..n * k).map(|_| rnd() - 0.5).collect();
                let words = [rows, k, n, accumulate as usize];
                let got = run_driver(&exe, &dir, &words, &[&x, &w, &y0, &dy, &dw0]);
                let mut y = y0.clone();
                let wt = spike::transpose(&w, n, k);
                spike::spike_dense(&x, &wt, None, &mut y, rows, k, n, accumulate).unwrap();
                let mut dw = dw0.clone();
                spike::spike_dense_dw(&x, &dy, &mut dw, None, rows, k, n).unwrap();
                let what = format!("rows {rows} k {k} n {n} rate {rate} acc {accumulate}");
                assert!(got[..rows * n] == y[..], "{what}: snn_spike_gemm");
                assert!(got[rows * n..] == dw[..], "{what}: snn_spike_gemm_dw");
            }
        }
    }
}

/// The event-driven conv kernels (`snn_spike_conv2d`, `snn_spike_conv2d_dw` in ops.cuh)
/// through the shim against the CPU device's (`spike_conv2d`, `spike_conv2d_dw`): bit for
/// bit on 0/1 spikes with arbitrary weights and gradients (the same summation order), over
/// strides, padding and kernel shapes.
#[test]
fn ops_spike_conv2d_matches_cpu() {
    use snn_runtime::cpu::spike;
    use snn_runtime::plan::ConvGeom;
    let Some(cxx) = cxx() else {
        return skip("ops_spike_conv2d_matches_cpu");
    };
    let dir = work_dir("ops_spike_conv");
    let src = r#"#include "host_shim.h"
#include <cstdio>
#include <vector>
#include "ops.cuh"
static dim3 grid(snn_u64 n) { return dim3((unsigned)((n + 255) / 256)); }
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    unsigned long long d[11];
    if (std::fread(d, 8, 11, f) != 11) return 2;
    const snn_u64 images = d[0], c_in = d[1], h = d[2], w = d[3], c_out = d[4], kh = d[5],
                  kw = d[6], stride = d[7], pad = d[8], read_dst = d[9], ho_wo = d[10];
    const snn_u64 h_out = ho_wo >> 32, w_out = ho_wo & 0xffffffffu;
    const snn_u64 kk = c_in * kh * kw, yl = images * c_out * h_out * w_out;
    std::vector<float> x(images * c_in * h * w), wg(c_out * kk), y(yl), dy(yl), dw(c_out * kk);
    for (auto* v : {&x, &wg, &y, &dy, &dw})
        if (std::fread(v->data(), 4, v->size(), f) != v->size()) return 3;
    std::fclose(f);
    snn_shim_launch(snn_spike_conv2d, grid(yl), dim3(256), x.data(), wg.data(), y.data(), yl,
                    c_in, h, w, kh, kw, stride, pad, h_out, w_out, c_out, read_dst);
    snn_shim_launch(snn_spike_conv2d_dw, grid(c_out * kk), dim3(256), x.data(), dy.data(),
                    dw.data(), c_out * kk, images, c_in, h, w, kh, kw, stride, pad, h_out, w_out,
                    c_out);
    FILE* o = std::fopen(argv[2], "wb");
    std::fwrite(y.data(), 4, y.size(), o);
    std::fwrite(dw.data(), 4, dw.size(), o);
    std::fclose(o);
    return 0;
}
"#;
    std::fs::write(dir.join("spike_conv.cpp"), src).unwrap();
    let exe = build(&cxx, &dir, "spike_conv.cpp", "spike_conv", false);
    let mut rnd = xorshift(0x9e3779b97f4a7c15u64);
    let geoms = [
        (8, 14, 14, 16, 3, 3, 1, 1),
        (3, 9, 7, 5, 3, 2, 2, 1),
        (2, 8, 8, 37, 5, 5, 1, 2),
        (1, 11, 13, 3, 4, 3, 3, 0),
    ];
    for (c_in, h, w, c_out, kh, kw, stride, pad) in geoms {
        let g = ConvGeom {
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
            h_out: (h + 2 * pad - kh) / stride + 1,
            w_out: (w + 2 * pad - kw) / stride + 1,
        };
        let images = 3;
        let kk = c_in * kh * kw;
        let yl = images * c_out * g.h_out * g.w_out;
        for rate in [0.0f32, 0.1, 0.5, 1.0] {
            for accumulate in [false, true] {
                let x: Vec<f32> = (0..images * c_in * h * w)
                    .map(|_| if rnd() < rate { 1.0 } else { 0.0 })
                    .collect();
                let wg: Vec<f32> = (0..c_out * kk).map(|_| rnd() - 0.5).collect();
                let y0: Vec<f32> = (0..yl).map(|_| rnd() - 0.5).collect();
                let dy: Vec<f32> = (0..yl).map(|_| rnd() - 0.5).collect();
                let dw0: Vec<f32> = (0..c_out * kk).map(|_| rnd() - 0.5).collect();
                let ho_wo = (g.h_out << 32) | g.w_out;
                let words = [
                    images,
                    c_in,
                    h,
                    w,
                    c_out,
                    kh,
                    kw,
                    stride,
                    pad,
                    accumulate as usize,
                    ho_wo,
                ];
                let got = run_driver(&exe, &dir, &words, &[&x, &wg, &y0, &dy, &dw0]);
                let mut y = y0.clone();
                let wt = spike::transpose(&wg, c_out, kk);
                spike::spike_conv2d(&x, &wt, None, &mut y, images, &g, accumulate).unwrap();
                let mut dw = dw0.clone();
                spike::spike_conv2d_dw(&x, &dy, &mut dw, None, images, &g).unwrap();
                let what = format!("{g:?} rate {rate} acc {accumulate}");
                assert!(got[..yl] == y[..], "{what}: snn_spike_conv2d");
                assert!(got[yl..] == dw[..], "{what}: snn_spike_conv2d_dw");
            }
        }
    }
}

/// Outputs compared and outputs bit-exact, or what differed.
type Outcome = Result<(usize, usize), String>;

/// The generated CUDA of `program` built through the shim (in `work_dir(name)`) and loaded
/// as a session of the runtime.
fn shim_session(cxx: &str, name: &str, program: &Program) -> Result<Session, String> {
    let dir = work_dir(name);
    let cu = format!("{name}.cu");
    std::fs::write(dir.join(&cu), cuda::print_program(program)).unwrap();
    std::fs::write(
        dir.join("driver.cpp"),
        cuda::print_shim_driver(program, &cu),
    )
    .unwrap();
    let lib = build(
        cxx,
        &dir,
        "driver.cpp",
        &format!("libsnn_cuda_shim_{name}.so"),
        true,
    );
    let table = KernelTable::load(&lib, &program.plan).map_err(|e| format!("{name}: {e}"))?;
    Session::new(program.plan.clone(), table).map_err(|e| format!("{name}: {e}"))
}

/// One model: the Rust kernels and the shimmed CUDA kernels on the same plan, weights and
/// inputs, at two `(t, batch)` sizes. Returns (outputs compared, outputs bit-exact).
fn check_model(cxx: &str, path: &Path) -> Outcome {
    let name = path.file_stem().unwrap().to_string_lossy().to_string();
    let program = compile_file(path);
    let cache = workspace().join("target").join("snnc-test-cache");
    let mut cpu = snnc::session::load(&program, Some(&cache))
        .map_err(|d| format!("{name}: Rust kernels: {}", d.message))?
        .session;

    let mut shim = shim_session(cxx, &name, &program)?;

    // Larger weights than the default init, so that every layer actually spikes.
    for w in &program.plan.weights {
        let scaled: Vec<f32> = cpu
            .weight(&w.name)
            .unwrap()
            .iter()
            .map(|x| x * 4.0)
            .collect();
        cpu.set_weight(&w.name, &scaled).unwrap();
        shim.set_weight(&w.name, &scaled).unwrap();
    }

    let (mut compared, mut exact) = (0, 0);
    // Another T too, unless a [T, T] weight (a PSN's) fixes it.
    let t2 = if program.plan.fixed_steps() {
        program.plan.t
    } else {
        7
    };
    for (t, batch) in [(program.plan.t, program.plan.batch), (t2, 3)] {
        let inputs = cpu.random_inputs(t, batch, 1234);
        let a = cpu
            .run(&inputs, t, batch)
            .map_err(|e| format!("{name}: {e}"))?;
        let b = shim
            .run(&inputs, t, batch)
            .map_err(|e| format!("{name}: {e}"))?;
        if a.len() != b.len() {
            return Err(format!("{name}: {} outputs vs {}", a.len(), b.len()));
        }
        for ((d, x), (_, y)) in a.iter().zip(&b) {
            compare(&name, &d.name, d.kind, x, y, t, batch)?;
            compared += 1;
            if x.data
                .iter()
                .zip(&y.data)
                .all(|(p, q)| p.to_bits() == q.to_bits())
            {
                exact += 1;
            }
        }
    }
    Ok((compared, exact))
}

fn compare(
    model: &str,
    output: &str,
    kind: snn_runtime::plan::OutputKind,
    x: &Tensor,
    y: &Tensor,
    t: usize,
    batch: usize,
) -> Result<(), String> {
    use snn_runtime::plan::OutputKind;
    let at = format!("{model}: output `{output}` (t = {t}, batch = {batch})");
    if x.shape != y.shape {
        return Err(format!("{at}: shape {:?} vs {:?}", x.shape, y.shape));
    }
    for (i, (&p, &q)) in x.data.iter().zip(&y.data).enumerate() {
        let ok = match kind {
            OutputKind::Spikes | OutputKind::Counts => p.to_bits() == q.to_bits(),
            OutputKind::Trace => p == q || (p - q).abs() <= 1e-5 * p.abs().max(q.abs()),
        };
        if !ok {
            return Err(format!(
                "{at}: element {i}: Rust {p:?}, CUDA via shim {q:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn generated_cuda_matches_rust_kernels_on_every_model() {
    let Some(cxx) = cxx() else {
        return skip("generated_cuda_matches_rust_kernels_on_every_model");
    };
    let files = model_files();
    assert!(!files.is_empty());
    // Two at a time: each model is one g++ run and one cached rustc build.
    let results: Vec<(PathBuf, Outcome)> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for pair in files.chunks(2) {
            let handles: Vec<_> = pair
                .iter()
                .map(|p| {
                    let cxx = cxx.as_str();
                    (p.clone(), s.spawn(move || check_model(cxx, p)))
                })
                .collect();
            for (p, h) in handles {
                let r = h.join().unwrap_or_else(|e| {
                    Err(e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()))
                });
                out.push((p, r));
            }
        }
        out
    });
    let mut failures = Vec::new();
    let (mut compared, mut exact) = (0, 0);
    for (p, r) in &results {
        match r {
            Ok((c, e)) => {
                compared += c;
                exact += e;
            }
            Err(e) => failures.push(format!("{}: {e}", p.display())),
        }
    }
    println!(
        "cuda_shim: {}/{} models match the Rust kernels ({compared} outputs, {exact} bit-exact)",
        results.len() - failures.len(),
        results.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Generated CUDA of bounded depth (`passes::lower::split_deep`) through the shim against
/// the Rust kernels: updates nested 256 levels (the front end's limit) in several
/// operators, a state whose initial value is a 256-term sum, and a population fed by 254
/// projections (the compiler's own 254-term sum of currents).
#[test]
fn deep_expressions_match_rust_kernels() {
    let Some(cxx) = cxx() else {
        return skip("deep_expressions_match_rust_kernels");
    };
    let n = 256;
    let mut src = String::new();
    let ops = ["+", "-", "*", "/", "^", "<", "&&"];
    for (k, op) in ops.iter().enumerate() {
        let c = if matches!(*op, "*" | "/" | "^") {
            "1.001"
        } else {
            "0.7"
        };
        // The neuron's and the update's braces count as bracket levels.
        let mut e = "I".to_string();
        for _ in 1..n - 2 {
            e = format!("({c} {op} {e})");
        }
        src += &format!(
            "neuron D{k} {{\n  param p = 0.001\n  state v = p{}\n  update {{ v = {e} }}\n}}\n",
            " + p".repeat(n - 1)
        );
    }
    src += "model deep {\n  T = 4\n  batch = 2\n  input x: [T, 4]\n";
    for k in 0..ops.len() {
        src += &format!("  p{k} = D{k}(x)\n  output trace(p{k}.v)\n");
    }
    // The call around the sum counts as levels too.
    for j in 0..n - 2 {
        src += &format!("  d{j} = dense(x, 4)\n");
    }
    let sum: Vec<String> = (0..n - 2).map(|j| format!("d{j}")).collect();
    src += &format!(
        "  s = LI({}, tau = 2.0)\n  output trace(s.v)\n}}\n",
        sum.join(" + ")
    );
    let path = work_dir("deep").join("deep.snn");
    std::fs::write(&path, src).unwrap();
    // Room for the recursive passes over 256 levels (the front end's limit bounds them).
    let (compared, _) = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || check_model(&cxx, &path))
        .unwrap()
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compared, 2 * (ops.len() + 1));
}

/// The training plans of tests/in/train: forward and backward (reverse-time kernels, and
/// the atomic gradient sums of learnable parameters in tests/in/train/plif.snn) in the
/// generated CUDA through the shim against the Rust kernels: every weight gradient within
/// 1e-5 of the largest of its tensor (the atomic adds sum in another order).
#[test]
fn generated_cuda_backward_matches_rust_kernels_on_training_plans() {
    let Some(cxx) = cxx() else {
        return skip("generated_cuda_backward_matches_rust_kernels_on_training_plans");
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/in/train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snn"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("plif.snn")));
    for path in files {
        let name = format!("train_{}", path.file_stem().unwrap().to_string_lossy());
        let program = compile_with(
            &path,
            Options {
                train: true,
                ..Options::default()
            },
        );
        let cache = workspace().join("target").join("snnc-test-cache");
        let mut cpu = snnc::session::load(&program, Some(&cache))
            .unwrap_or_else(|d| panic!("{name}: {}", d.message))
            .session;
        let mut shim = shim_session(&cxx, &name, &program).unwrap();
        for w in &program.plan.weights {
            // Larger dense weights, so that the layers spike; learned parameters as they are.
            let k = if w.name.ends_with(".weight") {
                3.0
            } else {
                1.0
            };
            let v: Vec<f32> = cpu.weight(&w.name).unwrap().iter().map(|x| x * k).collect();
            cpu.set_weight(&w.name, &v).unwrap();
            shim.set_weight(&w.name, &v).unwrap();
        }
        let (t, batch) = (program.plan.t, program.plan.batch);
        let inputs = cpu.random_inputs(t, batch, 99);
        let a = cpu.run(&inputs, t, batch).unwrap();
        let b = shim.run(&inputs, t, batch).unwrap();
        for ((d, x), (_, y)) in a.iter().zip(&b) {
            compare(&name, &d.name, d.kind, x, y, t, batch).unwrap();
        }
        // Any fixed loss gradient will do: the same for both.
        let grads = fixed_loss_grads(&program, t, batch);
        let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        cpu.backward(&refs, t, batch).unwrap();
        shim.backward(&refs, t, batch).unwrap();
        let (ga, gb) = (cpu.grads().unwrap(), shim.grads().unwrap());
        for (w, g) in program.plan.weights.iter().zip(&ga) {
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{name}: the gradient of `{}` is zero: nothing is compared",
                w.name
            );
        }
        for (w, (x, y)) in program.plan.weights.iter().zip(ga.iter().zip(&gb)) {
            let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * scale.max(1e-3),
                    "{name}: gradient of `{}`[{i}]: Rust {p}, CUDA via shim {q}",
                    w.name
                );
            }
        }
        println!(
            "cuda_shim: {name}: forward and {} weight gradients match",
            ga.len()
        );
    }
}

/// A fixed gradient for the loss and each regulariser of a training plan.
fn fixed_loss_grads(program: &Program, t: usize, batch: usize) -> Vec<Vec<f32>> {
    let tp = program.plan.train.as_ref().unwrap();
    std::iter::once(tp.loss.grad)
        .chain(tp.regularizers.iter().map(|r| r.grad))
        .map(|buf| {
            let d = &program.plan.buffers[buf];
            let rows = match d.extent {
                snn_runtime::plan::Extent::Seq => t * batch,
                _ => batch,
            };
            (0..rows * d.features)
                .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.05)
                .collect()
        })
        .collect()
}

/// Prefetched blocks of steps (`Options::prefetch_steps`) change where a kernel loads its
/// inputs, not what it computes: forward outputs and every weight gradient of training
/// plans (reverse-time kernels with several prefetched inputs, atomic parameter gradients)
/// are bit-identical with blocks of 1, 3 and 8 steps, at a T that is not a multiple of the
/// block (a short last block) and at T = 2 (one short block).
#[test]
fn prefetched_steps_compute_what_the_plain_loop_computes() {
    let Some(cxx) = cxx() else {
        return skip("prefetched_steps_compute_what_the_plain_loop_computes");
    };
    for file in ["train/plif.snn", "train/bpsta.snn", "encoders_pooling.snn"] {
        let path = workspace().join("tests/in").join(file);
        let train = file.starts_with("train/");
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut runs = Vec::new();
        for steps in [1u32, 3, 8] {
            let program = compile_with(
                &path,
                Options {
                    train,
                    prefetch_steps: steps,
                    ..Options::default()
                },
            );
            let source = cuda::print_program(&program);
            // Not vacuous: blocks are printed, for the backward kernels too.
            assert_eq!(
                source.contains(&format!("ts0 += {steps}u")),
                steps > 1,
                "{file}: blocks of {steps}"
            );
            if train && steps > 1 {
                assert!(
                    source.contains("t_len - 1 - (ts0 + k)"),
                    "{file}: reverse blocks"
                );
            }
            let name = format!("prefetch_{stem}_{steps}");
            let mut shim = shim_session(&cxx, &name, &program).unwrap();
            let mut out: Vec<Vec<f32>> = Vec::new();
            let fixed = program.plan.fixed_steps();
            let ts = if fixed {
                vec![program.plan.t]
            } else {
                vec![13, 2]
            };
            for t in ts {
                let batch = 3;
                for w in &program.plan.weights {
                    let k = if w.name.ends_with(".weight") {
                        3.0
                    } else {
                        1.0
                    };
                    let v: Vec<f32> = shim
                        .weight(&w.name)
                        .unwrap()
                        .iter()
                        .map(|x| x * k)
                        .collect();
                    shim.set_weight(&w.name, &v).unwrap();
                }
                let inputs = shim.random_inputs(t, batch, 7);
                out.extend(
                    shim.run(&inputs, t, batch)
                        .unwrap()
                        .into_iter()
                        .map(|(_, x)| x.data),
                );
                if train {
                    let grads = fixed_loss_grads(&program, t, batch);
                    let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                    shim.backward(&refs, t, batch).unwrap();
                    let g = shim.grads().unwrap();
                    assert!(
                        g.iter().flatten().any(|v| *v != 0.0),
                        "{file}: zero gradients"
                    );
                    out.extend(g);
                }
            }
            runs.push((steps, out));
        }
        let (_, plain) = &runs[0];
        for (steps, out) in &runs[1..] {
            assert_eq!(out.len(), plain.len());
            for (i, (a, b)) in plain.iter().zip(out).enumerate() {
                let same =
                    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same,
                    "{file}: result {i} differs with blocks of {steps} steps"
                );
            }
        }
    }
}

/// The runtime's library kernels (kernels/cuda/ops.cuh) through the shim against the CPU
/// device's operations (runtime/src/cpu/ops.rs): the pooling forward and backward (max and
/// average, padding, overlapping windows, ties) and the conv bias gradient bit for bit (the
/// same summation order), and col2im, fed the `W^T @ dy` columns the cuBLAS GEMM would
/// produce, against the CPU conv input gradient to 1e-5.
#[test]
fn runtime_ops_kernels_match_the_cpu_device() {
    use snn_runtime::cpu::ops;
    use snn_runtime::plan::{ConvGeom, PoolGeom, PoolKind};
    let Some(cxx) = cxx() else {
        return skip("runtime_ops_kernels_match_the_cpu_device");
    };
    let dir = work_dir("runtime_ops");
    std::fs::write(
        dir.join("ops_driver.cpp"),
        r#"#include "host_shim.h"
#include "ops.cuh"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
static std::string dir;
static std::vector<float> load(const char* name) {
    std::FILE* f = std::fopen((dir + name).c_str(), "rb");
    if (!f) std::exit(2);
    std::fseek(f, 0, SEEK_END);
    long n = std::ftell(f) / 4;
    std::fseek(f, 0, SEEK_SET);
    std::vector<float> v(n);
    if (std::fread(v.data(), 4, n, f) != (size_t)n) std::exit(3);
    std::fclose(f);
    return v;
}
static void save(const std::vector<float>& v) {
    std::FILE* f = std::fopen((dir + "out.bin").c_str(), "wb");
    std::fwrite(v.data(), 4, v.size(), f);
    std::fclose(f);
}
static dim3 blocks(snn_u64 n) { return dim3((unsigned)((n + 255) / 256)); }
int main(int argc, char** argv) {
    std::string op = argv[1];
    dir = std::string(argv[2]) + "/";
    std::vector<snn_u64> a;
    for (int i = 3; i < argc; ++i) a.push_back(std::strtoull(argv[i], nullptr, 10));
    if (op == "col2im") {
        auto col = load("a.bin");
        auto dx = load("b.bin");
        snn_shim_launch(snn_col2im, blocks(a[0]), dim3(256), col.data(), dx.data(), a[0], a[1],
                        a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
        save(dx);
    } else if (op == "conv_bias_grad") {
        auto dy = load("a.bin");
        auto db = load("b.bin");
        snn_shim_launch(snn_conv_bias_grad, blocks(a[1]), dim3(256), db.data(), dy.data(), a[0],
                        a[1], a[2]);
        save(db);
    } else if (op == "pool2d") {
        auto x = load("a.bin");
        std::vector<float> y(a[0]);
        snn_shim_launch(snn_pool2d, blocks(a[0]), dim3(256), x.data(), y.data(), a[0], a[1],
                        a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
        save(y);
    } else if (op == "pool2d_dx") {
        auto x = load("a.bin");
        auto dy = load("b.bin");
        auto dx = load("c.bin");
        snn_shim_launch(snn_pool2d_dx, blocks(a[0]), dim3(256), x.data(), dy.data(), dx.data(),
                        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
        save(dx);
    } else {
        return 1;
    }
    return 0;
}
"#,
    )
    .unwrap();
    let exe = build(&cxx, &dir, "ops_driver.cpp", "ops_driver", false);
    let run = |op: &str, inputs: &[&[f32]], args: &[usize]| -> Vec<f32> {
        for (name, data) in ["a.bin", "b.bin", "c.bin"].iter().zip(inputs) {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let o = Command::new(&exe)
            .arg(op)
            .arg(&dir)
            .args(args.iter().map(|v| v.to_string()))
            .output()
            .unwrap();
        assert!(o.status.success(), "ops driver {op}: {o:?}");
        std::fs::read(dir.join("out.bin"))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let vals = |n: usize, seed: usize, levels: Option<usize>| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let r = ((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0;
                match levels {
                    Some(l) => ((r * l as f32) as usize).min(l - 1) as f32,
                    None => r * 2.0 - 1.0,
                }
            })
            .collect()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();

    // Pooling, forward and backward.
    // Padding (top, left, bottom, right); the last two differ per side (Spyker's).
    let pool = |c, h, w, k, stride, pad: [usize; 4]| PoolGeom {
        c,
        h,
        w,
        k,
        stride,
        pad,
        h_out: (h + pad[0] + pad[2] - k) / stride + 1,
        w_out: (w + pad[1] + pad[3] - k) / stride + 1,
    };
    let mut cases = 0;
    for g in [
        pool(3, 9, 7, 3, 2, [1; 4]),
        pool(2, 5, 6, 3, 1, [1; 4]),
        pool(2, 9, 8, 2, 3, [0; 4]),
        pool(4, 8, 8, 2, 2, [0; 4]),
        pool(2, 9, 9, 2, 2, [1, 0, 0, 1]),
        pool(3, 9, 7, 3, 2, [0, 2, 0, 2]),
    ] {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for (seed, levels) in [(1, None), (2, Some(2))] {
                let images = 3;
                let (pin, pout) = (g.h * g.w, g.h_out * g.w_out);
                let planes = images * g.c;
                let x = vals(planes * pin, seed, levels);
                let dy = vals(planes * pout, seed + 10, None);
                let k = (kind == PoolKind::Avg) as usize;
                let geo = [
                    g.h, g.w, g.k, g.stride, g.pad[0], g.pad[1], g.h_out, g.w_out, k,
                ];
                let mut y = vec![0.0; planes * pout];
                ops::pool2d(&x, &mut y, images, kind, &g).unwrap();
                let mut args = vec![planes * pout];
                args.extend(geo);
                assert_eq!(
                    bits(&run("pool2d", &[&x], &args)),
                    bits(&y),
                    "pool2d {kind:?} {g:?}"
                );
                for acc in [false, true] {
                    let prior = vals(planes * pin, seed + 20, None);
                    let mut dx = prior.clone();
                    ops::pool2d_dx(&x, &dy, &mut dx, images, kind, &g, acc).unwrap();
                    let mut args = vec![planes * pin];
                    args.extend(geo);
                    args.push(acc as usize);
                    let got = run("pool2d_dx", &[&x, &dy, &prior], &args);
                    assert_eq!(bits(&got), bits(&dx), "pool2d_dx {kind:?} {g:?} acc {acc}");
                    cases += 1;
                }
            }
        }
    }

    // Conv: the bias gradient and col2im.
    let conv = |c_in, h, w, c_out, kh, kw, stride, pad| ConvGeom {
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        pad,
        h_out: (h + 2 * pad - kh) / stride + 1,
        w_out: (w + 2 * pad - kw) / stride + 1,
    };
    for g in [
        conv(3, 9, 7, 4, 3, 3, 2, 1),
        conv(3, 9, 7, 4, 3, 2, 1, 1),
        conv(2, 8, 8, 3, 5, 5, 3, 2),
    ] {
        let images = 4;
        let (xi, p) = (g.c_in * g.h * g.w, g.h_out * g.w_out);
        let kk = g.c_in * g.kh * g.kw;
        let x = vals(images * xi, 3, None);
        let dy = vals(images * g.c_out * p, 4, None);
        let w = vals(g.c_out * kk, 5, None);
        let prior = vals(g.c_out, 6, None);
        let mut dw = vec![0.0; g.c_out * kk];
        let mut db = prior.clone();
        ops::conv2d_dw(&x, &dy, &mut dw, Some(&mut db), images, &g).unwrap();
        let got = run("conv_bias_grad", &[&dy, &prior], &[images, g.c_out, p]);
        assert_eq!(bits(&got), bits(&db), "conv bias gradient {g:?}");
        // col[img, kk, p] = W^T @ dy[img], as cuBLAS would compute it (in f64 here).
        let mut col = vec![0.0f32; images * kk * p];
        for img in 0..images {
            for r in 0..kk {
                for q in 0..p {
                    let s: f64 = (0..g.c_out)
                        .map(|co| w[co * kk + r] as f64 * dy[(img * g.c_out + co) * p + q] as f64)
                        .sum();
                    col[(img * kk + r) * p + q] = s as f32;
                }
            }
        }
        for acc in [false, true] {
            let prior = vals(images * xi, 7, None);
            let mut dx = prior.clone();
            ops::conv2d_dx(&dy, &w, &mut dx, images, &g, acc).unwrap();
            let mut args = vec![images * xi];
            args.extend([
                g.c_in,
                g.h,
                g.w,
                g.kh,
                g.kw,
                g.stride,
                g.pad,
                g.h_out,
                g.w_out,
                acc as usize,
            ]);
            let got = run("col2im", &[&col, &prior], &args);
            for (i, (a, b)) in got.iter().zip(&dx).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "conv2d_dx {g:?} acc {acc}: element {i}: shim {a}, CPU {b}"
                );
            }
            cases += 1;
        }
    }
    println!("cuda_shim: {cases} ops.cuh backward cases match the CPU device");
}
