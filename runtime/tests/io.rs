//! Weights (safetensors) and arrays (.npy): round trips, foreign files, and every load error.

mod common;
use common::*;
use snn_runtime::io::{read_npy, weights, write_npy};
use snn_runtime::plan::*;
use snn_runtime::{KernelTable, RuntimeError, Session, Tensor};
use std::fs;

#[test]
fn safetensors_round_trip() {
    let dir = temp_dir("st-roundtrip");
    let p = dir.join("w.safetensors");
    let a = rand_vec(12, 1, -1.0, 1.0);
    let b = vec![0.5f32, -0.25, 3.0];
    let s = [7.0f32];
    weights::save(
        &p,
        &[
            ("fc1.weight".into(), vec![3, 4], &a[..]),
            ("fc1.bias".into(), vec![3], &b[..]),
            ("s1.tau".into(), vec![], &s[..]),
        ],
    )
    .unwrap();
    assert!(!dir.join("w.safetensors.tmp").exists());
    let got = weights::load(&p).unwrap();
    assert_eq!(
        got,
        vec![
            ("fc1.bias".to_string(), vec![3], b.clone()),
            ("fc1.weight".to_string(), vec![3, 4], a.clone()),
            ("s1.tau".to_string(), vec![], s.to_vec()),
        ]
    );
    // Bit-exact, and the header carries the torch format tag.
    let bytes = fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.contains("\"format\":\"pt\"") && header.contains("F32"),
        "{header}"
    );

    // Duplicate names and wrong lengths are refused, and the old file survives.
    let e = weights::save(
        &p,
        &[("x".into(), vec![1], &s[..]), ("x".into(), vec![1], &s[..])],
    );
    assert!(e.unwrap_err().to_string().contains("`x` appears twice"));
    let e = weights::save(&p, &[("x".into(), vec![2], &s[..])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`") && e.contains("[2]"), "{e}");
    assert_eq!(weights::load(&p).unwrap().len(), 3);
    fs::remove_dir_all(dir).unwrap();
}

/// A safetensors file with one tensor of the given dtype, written by hand.
fn raw_safetensors(name: &str, dtype: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[0,{}]}}}}",
        shape.join(","),
        data.len()
    );
    let pad = (8 - header.len() % 8) % 8;
    header.push_str(&" ".repeat(pad));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[test]
fn safetensors_foreign_dtypes() {
    let dir = temp_dir("st-dtypes");
    let p = dir.join("t.safetensors");
    let f64s: Vec<u8> = [1.5f64, -2.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    fs::write(&p, raw_safetensors("a", "F64", &[2], &f64s)).unwrap();
    assert_eq!(weights::load(&p).unwrap()[0].2, vec![1.5, -2.25]);
    fs::write(
        &p,
        raw_safetensors("a", "F16", &[2], &[0x00, 0x3c, 0x00, 0xc0]),
    )
    .unwrap();
    assert_eq!(weights::load(&p).unwrap()[0].2, vec![1.0, -2.0]);
    fs::write(&p, raw_safetensors("a", "BF16", &[1], &[0x80, 0x3f])).unwrap();
    assert_eq!(weights::load(&p).unwrap()[0].2, vec![1.0]);
    fs::write(&p, raw_safetensors("a.idx", "I64", &[1], &[0; 8])).unwrap();
    let e = weights::load(&p).unwrap_err();
    assert!(matches!(e, RuntimeError::UnsupportedDtype { .. }));
    let e = e.to_string();
    assert!(
        e.contains("`a.idx`") && e.contains("I64") && e.contains("t.safetensors"),
        "{e}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn safetensors_load_errors() {
    let dir = temp_dir("st-errors");
    let missing = dir.join("missing.safetensors");
    let e = weights::load(&missing).unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }));
    assert!(e.to_string().contains("missing.safetensors"), "{e}");

    let corrupt = dir.join("corrupt.safetensors");
    fs::write(
        &corrupt,
        rand_vec(100, 3, 0.0, 1.0)
            .iter()
            .map(|x| (x * 255.0) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let e = weights::load(&corrupt).unwrap_err();
    assert!(matches!(e, RuntimeError::Format { .. }));
    assert!(e.to_string().contains("corrupt.safetensors"), "{e}");

    let tiny = dir.join("tiny.safetensors");
    fs::write(&tiny, b"abc").unwrap();
    let e = weights::load(&tiny).unwrap_err().to_string();
    assert!(
        e.contains("tiny.safetensors") && e.contains("3 bytes"),
        "{e}"
    );

    // Truncated: a valid file cut short.
    let good = dir.join("good.safetensors");
    let a = [1.0f32; 16];
    weights::save(&good, &[("a".into(), vec![16], &a[..])]).unwrap();
    let bytes = fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let e = weights::load(&cut).unwrap_err();
    assert!(matches!(e, RuntimeError::Format { .. }));
    assert!(e.to_string().contains("cut.safetensors"), "{e}");
    fs::remove_dir_all(dir).unwrap();
}

fn model() -> Session {
    let mut p = plan("m");
    p.buffers = vec![
        buf("x", Extent::Static, 4, 0),
        buf("y", Extent::Static, 3, 1),
    ];
    p.weights = vec![weight("fc1.weight", &[3, 4]), weight("fc1.bias", &[3])];
    p.params = vec![
        ParamDecl {
            name: "s1.tau".into(),
            value: 2.0,
            check: ParamCheck::Positive,
        },
        ParamDecl {
            name: "enc.seed".into(),
            value: f32::from_bits(0xdead_beef),
            check: ParamCheck::Bits,
        },
    ];
    p.inputs = vec![InputDecl {
        name: "x".into(),
        buffer: 0,
        shape: vec![4],
        time_varying: false,
    }];
    p.outputs = vec![OutputDecl {
        name: "y".into(),
        kind: OutputKind::Counts,
        buffer: 1,
        shape: vec![3],
    }];
    p.ops = vec![Op::Gemm(Gemm {
        x: 0,
        w: 0,
        bias: Some(1),
        y: 1,
        k: 4,
        n: 3,
        time: TimeSel::All { delay: 0 },
        accumulate: false,
        sparse: false,
    })];
    fix_slots(&mut p);
    Session::new(p, KernelTable::empty()).unwrap()
}

#[test]
fn session_weights_round_trip() {
    let dir = temp_dir("session-weights");
    let p = dir.join("ckpt.safetensors");
    let mut a = model();
    a.set_param("s1.tau", 3.5).unwrap();
    a.save_weights(&p).unwrap();

    let mut b = model();
    b.init_weights(12345).unwrap();
    assert_ne!(a.weight("fc1.weight"), b.weight("fc1.weight"));
    b.load_weights(&p).unwrap();
    assert_eq!(a.weight("fc1.weight"), b.weight("fc1.weight"));
    assert_eq!(a.weight("fc1.bias"), b.weight("fc1.bias"));
    assert_eq!(b.param("s1.tau"), Some(3.5));
    assert_eq!(b.param("enc.seed").map(f32::to_bits), Some(0xdead_beef));
    let x = a.random_inputs(1, 2, 5);
    assert_eq!(a.run(&x, 1, 2).unwrap(), b.run(&x, 1, 2).unwrap());

    // Params saved as shape [1] tensors next to the weights.
    let names: Vec<String> = weights::load(&p)
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(names, ["enc.seed", "fc1.bias", "fc1.weight", "s1.tau"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn session_load_errors_name_the_problem() {
    let dir = temp_dir("session-load-errors");
    let mut s = model();
    let before = s.weight("fc1.weight").unwrap().to_vec();
    let w = [0.0f32; 12];
    let b = [0.0f32; 3];

    let e = s
        .load_weights(dir.join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nope.safetensors") && e.contains("cannot read"),
        "{e}"
    );

    let p = dir.join("w.safetensors");
    weights::save(
        &p,
        &[
            ("fc1.weight".into(), vec![4, 3], &w[..]),
            ("fc1.bias".into(), vec![3], &b[..]),
        ],
    )
    .unwrap();
    let e = s.load_weights(&p).unwrap_err().to_string();
    assert!(
        e.contains("w.safetensors")
            && e.contains("`fc1.weight`")
            && e.contains("has shape [4, 3]")
            && e.contains("expects [3, 4]"),
        "{e}"
    );

    weights::save(&p, &[("fc1.weight".into(), vec![3, 4], &w[..])]).unwrap();
    let e = s.load_weights(&p).unwrap_err();
    assert!(matches!(e, RuntimeError::MissingTensors { .. }));
    assert!(e.to_string().contains("`fc1.bias`"), "{e}");

    weights::save(
        &p,
        &[
            ("fc1.weight".into(), vec![3, 4], &w[..]),
            ("fc1.bias".into(), vec![3], &b[..]),
            ("fc2.weight".into(), vec![3], &b[..]),
        ],
    )
    .unwrap();
    let e = s.load_weights(&p).unwrap_err().to_string();
    assert!(
        e.contains("`fc2.weight`") && e.contains("does not know") && e.contains("`s1.tau`"),
        "{e}"
    );

    let bad_tau = [-1.0f32];
    weights::save(
        &p,
        &[
            ("fc1.weight".into(), vec![3, 4], &w[..]),
            ("fc1.bias".into(), vec![3], &b[..]),
            ("s1.tau".into(), vec![1], &bad_tau[..]),
        ],
    )
    .unwrap();
    let e = s.load_weights(&p).unwrap_err().to_string();
    assert!(
        e.contains("w.safetensors") && e.contains("s1.tau") && e.contains("> 0"),
        "{e}"
    );

    let two = [1.0f32, 2.0];
    weights::save(
        &p,
        &[
            ("fc1.weight".into(), vec![3, 4], &w[..]),
            ("fc1.bias".into(), vec![3], &b[..]),
            ("s1.tau".into(), vec![2], &two[..]),
        ],
    )
    .unwrap();
    let e = s.load_weights(&p).unwrap_err().to_string();
    assert!(e.contains("s1.tau") && e.contains("[2]"), "{e}");

    // Nothing changed after all these failures.
    assert_eq!(s.weight("fc1.weight").unwrap(), &before[..]);
    assert_eq!(s.param("s1.tau"), Some(2.0));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn npy_round_trip() {
    let dir = temp_dir("npy-roundtrip");
    let p = dir.join("a.npy");
    let t = Tensor::new(vec![2, 3, 4], rand_vec(24, 4, -5.0, 5.0)).unwrap();
    write_npy(&p, &t).unwrap();
    assert!(!dir.join("a.npy.tmp").exists());
    assert_eq!(read_npy(&p).unwrap(), t);
    let s = Tensor::scalar(4.5);
    write_npy(&p, &s).unwrap();
    assert_eq!(read_npy(&p).unwrap(), s);
    let e = Tensor::zeros(&[0, 3]);
    write_npy(&p, &e).unwrap();
    assert_eq!(read_npy(&p).unwrap(), e);
    // The header is what numpy writes for float32.
    let bytes = fs::read(&p).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert!(String::from_utf8_lossy(&bytes).contains("'descr': '<f4'"));
    fs::remove_dir_all(dir).unwrap();
}

/// The exact bytes `np.save(p, np.array([[1.5, -2.0, 0.1], [3.0, 4.0, 1e-3]]))` writes.
fn numpy_f64_file() -> Vec<u8> {
    let mut header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }".to_vec();
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    for v in [1.5f64, -2.0, 0.1, 3.0, 4.0, 1e-3] {
        out.extend(v.to_le_bytes());
    }
    assert_eq!(out.len(), 128 + 48);
    out
}

#[test]
fn npy_reads_numpy_f64_and_reports_errors() {
    let dir = temp_dir("npy-f64");
    let p = dir.join("f64.npy");
    fs::write(&p, numpy_f64_file()).unwrap();
    let t = read_npy(&p).unwrap();
    assert_eq!(t.shape, vec![2, 3]);
    assert_eq!(t.data, vec![1.5, -2.0, 0.1, 3.0, 4.0, 1e-3]);

    let e = read_npy(dir.join("missing.npy")).unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }));
    assert!(e.to_string().contains("missing.npy"));

    let c = dir.join("corrupt.npy");
    fs::write(
        &c,
        rand_vec(64, 5, 0.0, 1.0)
            .iter()
            .map(|x| (x * 255.0) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let e = read_npy(&c).unwrap_err();
    assert!(matches!(e, RuntimeError::Format { .. }));
    assert!(e.to_string().contains("corrupt.npy"), "{e}");

    let mut cut = numpy_f64_file();
    cut.truncate(cut.len() - 8);
    fs::write(&c, cut).unwrap();
    let e = read_npy(&c).unwrap_err().to_string();
    assert!(e.contains("corrupt.npy") && e.contains("truncated"), "{e}");
    fs::remove_dir_all(dir).unwrap();
}
