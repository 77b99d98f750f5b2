//! Library ops (GEMM, conv2d, pooling) run through whole plans, against naive references.

mod common;
use common::*;
use snn_runtime::plan::*;
use snn_runtime::{KernelTable, Session, Tensor};

fn input(name: &str, buffer: BufId, shape: &[usize], time_varying: bool) -> InputDecl {
    InputDecl {
        name: name.into(),
        buffer,
        shape: shape.to_vec(),
        time_varying,
    }
}

fn output(name: &str, kind: OutputKind, buffer: BufId, shape: &[usize]) -> OutputDecl {
    OutputDecl {
        name: name.into(),
        kind,
        buffer,
        shape: shape.to_vec(),
    }
}

fn session(mut p: Plan) -> Session {
    fix_slots(&mut p);
    Session::new(p, KernelTable::empty()).unwrap()
}

fn out(outs: &[(OutputDecl, Tensor)], name: &str) -> Tensor {
    outs.iter().find(|(o, _)| o.name == name).unwrap().1.clone()
}

/// Sets every weight to deterministic values in [-1, 1); returns them.
fn randomize(s: &mut Session) -> Vec<Vec<f32>> {
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let v = rand_vec(s.weight(n).unwrap().len(), 100 + i as u32, -1.0, 1.0);
            s.set_weight(n, &v).unwrap();
            v
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    x: BufId,
    w: WeightId,
    bias: Option<WeightId>,
    y: BufId,
    k: usize,
    n: usize,
    time: TimeSel,
    accumulate: bool,
) -> Op {
    Op::Gemm(Gemm {
        x,
        w,
        bias,
        y,
        k,
        n,
        time,
        accumulate,
        sparse: false,
    })
}

#[test]
fn gemm_seq_with_bias_and_delay() {
    let (t, b, k, n, d) = (5, 3, 7, 6, 2);
    let mut p = plan("g");
    p.buffers = vec![buf("x", Extent::Seq, k, 0), buf("y", Extent::Seq, n, 1)];
    p.weights = vec![weight("fc.weight", &[n, k]), weight("fc.bias", &[n])];
    p.inputs = vec![input("x", 0, &[k], true)];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[n])];
    p.ops = vec![
        Op::Zero { buf: 1 },
        gemm(0, 0, Some(1), 1, k, n, TimeSel::All { delay: d }, false),
    ];
    let mut s = session(p);
    let w = randomize(&mut s);
    let x = Tensor::new(vec![t, b, k], rand_vec(t * b * k, 1, -1.0, 1.0)).unwrap();
    let outs = s.run(std::slice::from_ref(&x), t, b).unwrap();
    let y = out(&outs, "y");
    assert_eq!(y.shape, vec![t, b, n]);
    let mut want = vec![0.0; t * b * n];
    let shifted = naive_dense(
        &x.data[..(t - d) * b * k],
        &w[0],
        Some(&w[1]),
        (t - d) * b,
        k,
        n,
    );
    want[d * b * n..].copy_from_slice(&shifted);
    assert_close(&y.data, &want, 1e-5, "gemm delay 2");
    assert!(y.data[..d * b * n].iter().all(|&v| v == 0.0));

    // Same result inside a step loop with TimeSel::Step.
    let mut p2 = s.plan().clone();
    p2.ops = vec![
        Op::Zero { buf: 1 },
        Op::StepLoop {
            body: vec![gemm(
                0,
                0,
                Some(1),
                1,
                k,
                n,
                TimeSel::Step { delay: d },
                false,
            )],
        },
    ];
    let mut s2 = session(p2);
    s2.set_weight("fc.weight", &w[0]).unwrap();
    s2.set_weight("fc.bias", &w[1]).unwrap();
    let y2 = out(&s2.run(&[x], t, b).unwrap(), "y");
    assert_close(&y2.data, &want, 1e-5, "gemm step delay 2");
}

#[test]
fn gemm_without_bias_and_accumulate() {
    let (t, b, k1, k2, n) = (3, 4, 7, 5, 6);
    let mut p = plan("acc");
    p.buffers = vec![
        buf("x1", Extent::Seq, k1, 0),
        buf("x2", Extent::Seq, k2, 1),
        buf("y", Extent::Seq, n, 2),
    ];
    p.weights = vec![
        weight("a.weight", &[n, k1]),
        weight("b.weight", &[n, k2]),
        weight("b.bias", &[n]),
    ];
    p.inputs = vec![input("x1", 0, &[k1], true), input("x2", 1, &[k2], true)];
    p.outputs = vec![output("y", OutputKind::Trace, 2, &[n])];
    p.ops = vec![
        gemm(0, 0, None, 2, k1, n, TimeSel::All { delay: 0 }, false),
        gemm(1, 1, Some(2), 2, k2, n, TimeSel::All { delay: 0 }, true),
    ];
    let mut s = session(p);
    let w = randomize(&mut s);
    let x1 = Tensor::new(vec![t, b, k1], rand_vec(t * b * k1, 2, -1.0, 1.0)).unwrap();
    let x2 = Tensor::new(vec![t, b, k2], rand_vec(t * b * k2, 3, -1.0, 1.0)).unwrap();
    // Run twice: the result must not depend on what the slots held before.
    for _ in 0..2 {
        let y = out(&s.run(&[x1.clone(), x2.clone()], t, b).unwrap(), "y");
        let a = naive_dense(&x1.data, &w[0], None, t * b, k1, n);
        let c = naive_dense(&x2.data, &w[1], Some(&w[2]), t * b, k2, n);
        let want: Vec<f64> = a.iter().zip(&c).map(|(a, c)| a + c).collect();
        assert_close(&y.data, &want, 1e-5, "gemm accumulate");
    }
}

#[test]
fn gemm_static_source() {
    let (t, b, k, n) = (4, 3, 5, 2);
    let mut p = plan("static");
    p.buffers = vec![
        buf("x", Extent::Static, k, 0),
        buf("y_seq", Extent::Seq, n, 1),
        buf("y_static", Extent::Static, n, 2),
    ];
    p.weights = vec![weight("fc.weight", &[n, k]), weight("fc.bias", &[n])];
    p.inputs = vec![input("img", 0, &[k], false)];
    p.outputs = vec![
        output("seq", OutputKind::Trace, 1, &[n]),
        output("static", OutputKind::Counts, 2, &[n]),
    ];
    p.ops = vec![
        Op::Zero { buf: 1 },
        gemm(0, 0, Some(1), 1, k, n, TimeSel::All { delay: 1 }, false),
        gemm(0, 0, None, 2, k, n, TimeSel::All { delay: 0 }, false),
    ];
    let mut s = session(p);
    let w = randomize(&mut s);
    let x = Tensor::new(vec![b, k], rand_vec(b * k, 4, -1.0, 1.0)).unwrap();
    let outs = s.run(std::slice::from_ref(&x), t, b).unwrap();
    let once = naive_dense(&x.data, &w[0], Some(&w[1]), b, k, n);
    let mut want = vec![0.0; b * n];
    for _ in 1..t {
        want.extend(&once);
    }
    let seq = out(&outs, "seq");
    assert_eq!(seq.shape, vec![t, b, n]);
    assert_close(&seq.data, &want, 1e-5, "static -> seq");
    let st = out(&outs, "static");
    assert_eq!(st.shape, vec![b, n]);
    assert_close(
        &st.data,
        &naive_dense(&x.data, &w[0], None, b, k, n),
        1e-5,
        "static -> static",
    );
}

#[test]
fn gemm_large_parallel() {
    let (t, b, k, n) = (4, 64, 256, 128);
    let mut p = plan("big");
    p.buffers = vec![buf("x", Extent::Seq, k, 0), buf("y", Extent::Seq, n, 1)];
    p.weights = vec![weight("fc.weight", &[n, k]), weight("fc.bias", &[n])];
    p.inputs = vec![input("x", 0, &[k], true)];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[n])];
    p.ops = vec![gemm(
        0,
        0,
        Some(1),
        1,
        k,
        n,
        TimeSel::All { delay: 0 },
        false,
    )];
    let mut s = session(p);
    let w = randomize(&mut s);
    let x = Tensor::new(vec![t, b, k], rand_vec(t * b * k, 5, 0.0, 1.0)).unwrap();
    let y = out(&s.run(std::slice::from_ref(&x), t, b).unwrap(), "y");
    assert_close(
        &y.data,
        &naive_dense(&x.data, &w[0], Some(&w[1]), t * b, k, n),
        1e-5,
        "big gemm",
    );
}

fn conv_plan(g: ConvGeom, bias: bool) -> Plan {
    let mut p = plan("conv");
    p.buffers = vec![
        buf("x", Extent::Seq, g.c_in * g.h * g.w, 0),
        buf("y", Extent::Seq, g.c_out * g.h_out * g.w_out, 1),
    ];
    p.weights = vec![weight("c.weight", &[g.c_out, g.c_in, g.kh, g.kw])];
    if bias {
        p.weights.push(weight("c.bias", &[g.c_out]));
    }
    p.inputs = vec![input("x", 0, &[g.c_in, g.h, g.w], true)];
    p.outputs = vec![output(
        "y",
        OutputKind::Trace,
        1,
        &[g.c_out, g.h_out, g.w_out],
    )];
    p.ops = vec![Op::Conv2d(Conv2d {
        x: 0,
        w: 0,
        bias: if bias { Some(1) } else { None },
        y: 1,
        geom: g,
        time: TimeSel::All { delay: 0 },
        accumulate: false,
        sparse: false,
        wave: false,
    })];
    p
}

fn check_conv(g: ConvGeom, bias: bool, t: usize, b: usize) {
    let mut s = session(conv_plan(g, bias));
    let w = randomize(&mut s);
    let f = g.c_in * g.h * g.w;
    let x = Tensor::new(
        vec![t, b, g.c_in, g.h, g.w],
        rand_vec(t * b * f, 6, -1.0, 1.0),
    )
    .unwrap();
    let y = out(&s.run(std::slice::from_ref(&x), t, b).unwrap(), "y");
    assert_eq!(y.shape, vec![t, b, g.c_out, g.h_out, g.w_out]);
    let want = naive_conv(
        &x.data,
        &w[0],
        if bias { Some(&w[1]) } else { None },
        t * b,
        &g,
    );
    assert_close(&y.data, &want, 1e-5, &format!("conv {g:?}"));
}

#[test]
fn conv_stride2_pad1() {
    let g = conv_geom(3, 9, 7, 4, 3, 3, 2, 1);
    assert_eq!((g.h_out, g.w_out), (5, 4));
    check_conv(g, true, 2, 3);
    check_conv(g, false, 1, 2);
}

#[test]
fn conv_rectangular_and_pointwise() {
    check_conv(conv_geom(3, 9, 7, 4, 3, 2, 1, 1), true, 2, 2);
    check_conv(conv_geom(3, 6, 5, 5, 1, 1, 1, 0), true, 2, 2);
    check_conv(conv_geom(2, 8, 8, 3, 5, 5, 3, 2), true, 1, 3);
}

#[test]
fn conv_many_images_parallel() {
    check_conv(conv_geom(8, 16, 16, 16, 3, 3, 1, 1), true, 2, 8);
}

#[test]
fn conv_accumulate_and_step() {
    // y = conv1x1(x) + conv3x3(x) + bias, the second one accumulating, inside a step loop.
    let g1 = conv_geom(3, 6, 5, 4, 1, 1, 1, 0);
    let g3 = conv_geom(3, 6, 5, 4, 3, 3, 1, 1);
    let (t, b) = (3, 2);
    let mut p = plan("conv2");
    p.buffers = vec![buf("x", Extent::Seq, 90, 0), buf("y", Extent::Seq, 120, 1)];
    p.weights = vec![
        weight("a.weight", &[4, 3, 1, 1]),
        weight("b.weight", &[4, 3, 3, 3]),
        weight("b.bias", &[4]),
    ];
    p.inputs = vec![input("x", 0, &[3, 6, 5], true)];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[4, 6, 5])];
    p.ops = vec![Op::StepLoop {
        body: vec![
            Op::Conv2d(Conv2d {
                x: 0,
                w: 0,
                bias: None,
                y: 1,
                geom: g1,
                time: TimeSel::Step { delay: 0 },
                accumulate: false,
                sparse: false,
                wave: false,
            }),
            Op::Conv2d(Conv2d {
                x: 0,
                w: 1,
                bias: Some(2),
                y: 1,
                geom: g3,
                time: TimeSel::Step { delay: 0 },
                accumulate: true,
                sparse: false,
                wave: false,
            }),
        ],
    }];
    let mut s = session(p);
    let w = randomize(&mut s);
    let x = Tensor::new(vec![t, b, 3, 6, 5], rand_vec(t * b * 90, 8, -1.0, 1.0)).unwrap();
    let y = out(&s.run(std::slice::from_ref(&x), t, b).unwrap(), "y");
    let a = naive_conv(&x.data, &w[0], None, t * b, &g1);
    let c = naive_conv(&x.data, &w[1], Some(&w[2]), t * b, &g3);
    let want: Vec<f64> = a.iter().zip(&c).map(|(a, c)| a + c).collect();
    assert_close(&y.data, &want, 1e-5, "conv accumulate");
}

fn check_pool(kind: PoolKind, g: PoolGeom, t: usize, b: usize) {
    let mut p = plan("pool");
    p.buffers = vec![
        buf("x", Extent::Seq, g.c * g.h * g.w, 0),
        buf("y", Extent::Seq, g.c * g.h_out * g.w_out, 1),
    ];
    p.inputs = vec![input("x", 0, &[g.c, g.h, g.w], true)];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[g.c, g.h_out, g.w_out])];
    p.ops = vec![Op::Pool2d(Pool2d {
        x: 0,
        y: 1,
        kind,
        geom: g,
        time: TimeSel::All { delay: 0 },
    })];
    let mut s = session(p);
    let f = g.c * g.h * g.w;
    // Negative values: a max window touching the padding must not report 0.
    let x = Tensor::new(vec![t, b, g.c, g.h, g.w], rand_vec(t * b * f, 9, -1.0, 0.5)).unwrap();
    let y = out(&s.run(std::slice::from_ref(&x), t, b).unwrap(), "y");
    assert_eq!(y.shape, vec![t, b, g.c, g.h_out, g.w_out]);
    assert_close(
        &y.data,
        &naive_pool(&x.data, t * b, kind, &g),
        1e-6,
        &format!("{kind:?} {g:?}"),
    );
}

#[test]
fn max_and_avg_pool() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        check_pool(kind, pool_geom(3, 9, 7, 3, 2, 1), 2, 3);
        check_pool(kind, pool_geom(2, 8, 8, 2, 2, 0), 2, 2);
        check_pool(kind, pool_geom(4, 32, 32, 2, 2, 0), 2, 16);
        // Spyker's padding per side: (1, 0, 0, 1) and (0, 2) with a window of 3.
        check_pool(kind, pool_geom_sides(3, 9, 9, 2, 2, [1, 0, 0, 1]), 2, 3);
        check_pool(kind, pool_geom_sides(2, 9, 7, 3, 2, [0, 2, 0, 2]), 2, 2);
    }
    // Padding semantics on a single value: max pads with -inf, avg counts pads as zeros.
    let g = pool_geom(1, 1, 1, 3, 1, 1);
    let x = [-2.0f32];
    assert_eq!(naive_pool(&x, 1, PoolKind::Max, &g), vec![-2.0]);
    let mut y = [0.0f32];
    snn_runtime::cpu::ops::pool2d(&x, &mut y, 1, PoolKind::Max, &g).unwrap();
    assert_eq!(y, [-2.0]);
    snn_runtime::cpu::ops::pool2d(&x, &mut y, 1, PoolKind::Avg, &g).unwrap();
    assert_eq!(y, [-2.0 / 9.0]);
}

#[test]
fn ops_reject_bad_lengths() {
    use snn_runtime::cpu::ops;
    let mut y = vec![0.0; 5];
    let e = ops::dense(&[1.0; 6], &[1.0; 6], None, &mut y, 2, 3, 2, false).unwrap_err();
    assert!(e.to_string().contains("gemm output"), "{e}");
    let g = conv_geom(1, 4, 4, 1, 3, 3, 1, 0);
    let e = ops::conv2d(&[0.0; 15], &[0.0; 9], None, &mut [0.0; 4], 1, &g, false).unwrap_err();
    assert!(e.to_string().contains("conv2d input"), "{e}");
    let mut bad = g;
    bad.h_out = 3;
    assert!(ops::conv2d(&[0.0; 16], &[0.0; 9], None, &mut [0.0; 6], 1, &bad, false).is_err());
}

// ------------------------------------------------------------------ time mixing

/// `y[t, c] = sum_j a[t][j] x[j, c] + bias[t]`, in f64 (`x` is `[T, cols]`, or one row for a
/// static input).
fn naive_time_mix(a: &[f64], bias: &[f64], x: &[f32], t: usize, cols: usize) -> Vec<f64> {
    let static_x = x.len() == cols;
    let mut y = vec![0.0; t * cols];
    for r in 0..t {
        for c in 0..cols {
            let mut acc = bias[r];
            for j in 0..t {
                let xv = if static_x { x[c] } else { x[j * cols + c] };
                acc += a[r * t + j] * xv as f64;
            }
            y[r * cols + c] = acc;
        }
    }
    y
}

/// A plan `x -> TimeMix -> y` (plus a response input `r` `[T, 1]`).
fn mix_plan(t: usize, f: usize, x_seq: bool, ops: Vec<Op>, weights: Vec<WeightDecl>) -> Plan {
    let mut p = plan("mix");
    p.t = t;
    p.buffers = vec![
        buf("x", if x_seq { Extent::Seq } else { Extent::Static }, f, 0),
        buf("y", Extent::Seq, f, 1),
        buf("r", Extent::Seq, 1, 2),
        buf("z", Extent::Seq, 1, 3),
    ];
    p.weights = weights;
    p.params = vec![ParamDecl {
        name: "m.lambda".into(),
        value: 0.3,
        check: ParamCheck::UnitInterval,
    }];
    p.inputs = vec![
        input("x", 0, &[f], x_seq),
        input("r", 2, &[1], true),
        input("z", 3, &[1], true),
    ];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[f])];
    p.ops = ops;
    p
}

fn mix(matrix: TimeMatrix, bias: Option<TimeBias>, time: TimeSel, accumulate: bool) -> Op {
    Op::TimeMix(TimeMix {
        x: 0,
        y: 1,
        matrix,
        bias,
        time,
        accumulate,
    })
}

#[test]
fn time_mix_weight_masked_band_and_response() {
    let (t, b, f) = (6, 2, 3);
    let cols = b * f;
    let all = TimeSel::All { delay: 0 };
    let x = Tensor::new(vec![t, b, f], rand_vec(t * cols, 3, -1.0, 1.0)).unwrap();
    let r = Tensor::new(vec![t, b, 1], rand_vec(t * b, 4, -1.0, 1.0)).unwrap();
    let z = Tensor::new(vec![t, b, 1], rand_vec(t * b, 5, -1.0, 1.0)).unwrap();
    let square = vec![weight("m.weight", &[t, t]), weight("m.bias", &[t, 1])];
    let run = |p: Plan, set: &dyn Fn(&mut Session) -> Vec<Vec<f32>>, x: &Tensor| {
        let mut s = session(p);
        let w = set(&mut s);
        let y = out(
            &s.run(&[x.clone(), r.clone(), z.clone()], t, b).unwrap(),
            "y",
        );
        (w, y.data)
    };
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();

    // A full matrix and a per-step bias (PSN).
    let ops = vec![mix(
        TimeMatrix::Weight { w: 0 },
        Some(TimeBias::Weight(1)),
        all,
        false,
    )];
    let (w, y) = run(mix_plan(t, f, true, ops, square.clone()), &randomize, &x);
    let want = naive_time_mix(&f64s(&w[0]), &f64s(&w[1]), &x.data, t, cols);
    assert_close(&y, &want, 1e-5, "full");

    // Masked, lambda 0.3 and 1 (the plain band, SpikingJelly's `weight * mask0`).
    for lambda in [0.3f32, 1.0] {
        let ops = vec![mix(
            TimeMatrix::Masked {
                w: 0,
                k: 2,
                lambda: 0,
            },
            Some(TimeBias::Weight(1)),
            all,
            false,
        )];
        let mut s = session(mix_plan(t, f, true, ops, square.clone()));
        let w = randomize(&mut s);
        s.set_param("m.lambda", lambda).unwrap();
        let y = out(
            &s.run(&[x.clone(), r.clone(), z.clone()], t, b).unwrap(),
            "y",
        );
        let l = lambda as f64;
        let a: Vec<f64> = (0..t * t)
            .map(|i| {
                let (row, col) = (i / t, i % t);
                let band = if col <= row && row - col < 2 {
                    1.0
                } else {
                    0.0
                };
                (l * band + 1.0 - l) * w[0][i] as f64
            })
            .collect();
        let want = naive_time_mix(&a, &f64s(&w[1]), &x.data, t, cols);
        assert_close(&y.data, &want, 1e-5, &format!("masked lambda {lambda}"));
    }

    // A band of 3 shared weights and a scalar bias, all rows at once and row by row.
    let scalar = WeightDecl {
        name: "m.bias".into(),
        shape: vec![],
        init: Init::Constant(0.5),
    };
    let band = vec![weight("m.weight", &[3]), scalar];
    let bm = TimeMatrix::Band { w: 0, k: 3 };
    let ops = vec![mix(bm, Some(TimeBias::Scalar(1)), all, false)];
    let (w, y) = run(mix_plan(t, f, true, ops, band.clone()), &randomize, &x);
    let a: Vec<f64> = (0..t * t)
        .map(|i| {
            let (row, col) = (i / t, i % t);
            if col <= row && row - col < 3 {
                w[0][2 - (row - col)] as f64
            } else {
                0.0
            }
        })
        .collect();
    let want = naive_time_mix(&a, &vec![w[1][0] as f64; t], &x.data, t, cols);
    assert_close(&y, &want, 1e-5, "band");
    let step = vec![Op::StepLoop {
        body: vec![mix(
            bm,
            Some(TimeBias::Scalar(1)),
            TimeSel::Step { delay: 0 },
            false,
        )],
    }];
    let (_, y_step) = run(mix_plan(t, f, true, step, band.clone()), &randomize, &x);
    assert_eq!(y_step, y, "one row per step sums in the same order");

    // A static input: the row sums times the one value.
    let xs = Tensor::new(vec![b, f], rand_vec(cols, 6, -1.0, 1.0)).unwrap();
    let ops = vec![mix(bm, Some(TimeBias::Scalar(1)), all, false)];
    let (w2, y) = run(mix_plan(t, f, false, ops, band.clone()), &randomize, &xs);
    assert_eq!(w2, w);
    let want = naive_time_mix(&a, &vec![w[1][0] as f64; t], &xs.data, t, cols);
    assert_close(&y, &want, 1e-5, "band of a static input");

    // A response computed in the plan (first column of `r`), the free response `z` as the
    // bias, accumulated twice.
    let ops = vec![
        mix(
            TimeMatrix::Response { r: 2 },
            Some(TimeBias::Response(3)),
            all,
            false,
        ),
        mix(TimeMatrix::Response { r: 2 }, None, all, true),
    ];
    let (_, y) = run(mix_plan(t, f, true, ops, vec![]), &|_| vec![], &x);
    let resp = |n: usize| r.data[n * b] as f64;
    let a: Vec<f64> = (0..t * t)
        .map(|i| {
            let (row, col) = (i / t, i % t);
            if col <= row {
                2.0 * resp(row - col)
            } else {
                0.0
            }
        })
        .collect();
    let zb: Vec<f64> = (0..t).map(|n| z.data[n * b] as f64).collect();
    let want = naive_time_mix(&a, &zb, &x.data, t, cols);
    assert_close(&y, &want, 1e-5, "response");
}

#[test]
fn time_mix_checks() {
    let (t, f) = (4, 2);
    let all = TimeSel::All { delay: 0 };
    let square = vec![weight("m.weight", &[t, t]), weight("m.bias", &[t, 1])];
    let bad = |ops: Vec<Op>, weights: Vec<WeightDecl>, what: &str| {
        let mut p = mix_plan(t, f, true, ops, weights);
        fix_slots(&mut p);
        let e = Session::new(p, KernelTable::empty())
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e}");
    };
    // A matrix that reads later steps cannot run step by step.
    bad(
        vec![Op::StepLoop {
            body: vec![mix(
                TimeMatrix::Weight { w: 0 },
                None,
                TimeSel::Step { delay: 0 },
                false,
            )],
        }],
        square.clone(),
        "only a band matrix",
    );
    bad(
        vec![mix(
            TimeMatrix::Band { w: 0, k: 3 },
            Some(TimeBias::Weight(1)),
            all,
            false,
        )],
        vec![weight("m.weight", &[3]), weight("m.bias", &[t, 1])],
        "per-step bias",
    );
    bad(
        vec![mix(TimeMatrix::Weight { w: 0 }, None, all, false)],
        vec![weight("m.weight", &[t, t + 1])],
        "a time matrix is [T, T]",
    );
    // A [T, T] weight runs only at its own T.
    let ops = vec![mix(
        TimeMatrix::Weight { w: 0 },
        Some(TimeBias::Weight(1)),
        all,
        false,
    )];
    let mut s = session(mix_plan(t, f, true, ops, square));
    let z = |t: usize, n: usize| Tensor::zeros(&[t, 1, n]);
    let e = s
        .run(&[z(t + 2, f), z(t + 2, 1), z(t + 2, 1)], t + 2, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("runs only at T = 4, not T = 6"), "{e}");
    assert!(s.run(&[z(t, f), z(t, 1), z(t, 1)], t, 1).is_ok());
}

#[test]
fn constant_and_geometric_init() {
    let mut p = plan("init");
    p.weights = vec![
        WeightDecl {
            name: "a".into(),
            shape: vec![4],
            init: Init::Geometric { ratio: 0.5 },
        },
        WeightDecl {
            name: "b".into(),
            shape: vec![3, 1],
            init: Init::Constant(-1.0),
        },
    ];
    let s = Session::new(p, KernelTable::empty()).unwrap();
    assert_eq!(s.weight("a").unwrap(), &[0.125, 0.25, 0.5, 1.0]);
    assert_eq!(s.weight("b").unwrap(), &[-1.0; 3]);
}

/// A long full matrix (more than `SPARSE_ROW` non-zeros per row) goes through the GEMM.
#[test]
fn time_mix_long_sequence_gemm() {
    let (t, b, f) = (40, 3, 5);
    let cols = b * f;
    let ops = vec![mix(
        TimeMatrix::Weight { w: 0 },
        Some(TimeBias::Weight(1)),
        TimeSel::All { delay: 0 },
        false,
    )];
    let weights = vec![weight("m.weight", &[t, t]), weight("m.bias", &[t, 1])];
    let mut s = session(mix_plan(t, f, true, ops, weights));
    let w = randomize(&mut s);
    let x = Tensor::new(vec![t, b, f], rand_vec(t * cols, 8, -1.0, 1.0)).unwrap();
    let z = Tensor::zeros(&[t, b, 1]);
    let y = out(&s.run(&[x.clone(), z.clone(), z], t, b).unwrap(), "y");
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let want = naive_time_mix(&f64s(&w[0]), &f64s(&w[1]), &x.data, t, cols);
    assert_close(&y.data, &want, 1e-5, "full, GEMM path");
}

// ------------------------------------------------------------------ conv and pool backward

/// The input gradient of a conv: `dx[ci, iy, ix] = sum W[co, ci, i, j] dy[co, oy, ox]` over
/// the outputs whose window puts (i, j) on (iy, ix).
fn naive_conv_dx(dy: &[f32], w: &[f32], images: usize, g: &ConvGeom) -> Vec<f64> {
    let mut dx = vec![0.0; images * g.c_in * g.h * g.w];
    for im in 0..images {
        for co in 0..g.c_out {
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let d = dy[((im * g.c_out + co) * g.h_out + oy) * g.w_out + ox] as f64;
                    for ci in 0..g.c_in {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let iy = (oy * g.stride + i) as isize - g.pad as isize;
                                let ix = (ox * g.stride + j) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let wv = w[((co * g.c_in + ci) * g.kh + i) * g.kw + j] as f64;
                                dx[((im * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize] +=
                                    wv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// The weight and bias gradients of a conv, summed over the images.
fn naive_conv_dw(x: &[f32], dy: &[f32], images: usize, g: &ConvGeom) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0; g.c_out * g.c_in * g.kh * g.kw];
    let mut db = vec![0.0; g.c_out];
    for im in 0..images {
        for co in 0..g.c_out {
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let d = dy[((im * g.c_out + co) * g.h_out + oy) * g.w_out + ox] as f64;
                    db[co] += d;
                    for ci in 0..g.c_in {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let iy = (oy * g.stride + i) as isize - g.pad as isize;
                                let ix = (ox * g.stride + j) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x
                                    [((im * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize]
                                    as f64;
                                dw[((co * g.c_in + ci) * g.kh + i) * g.kw + j] += xv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, db)
}

/// Pooling backward: max routes each window's gradient to its first maximum (row-major,
/// strictly greater wins, padding never), average spreads `dy / k^2` over the window's
/// cells inside the image.
fn naive_pool_dx(x: &[f32], dy: &[f32], images: usize, kind: PoolKind, g: &PoolGeom) -> Vec<f64> {
    let mut dx = vec![0.0; images * g.c * g.h * g.w];
    for p in 0..images * g.c {
        for oy in 0..g.h_out {
            for ox in 0..g.w_out {
                let d = dy[(p * g.h_out + oy) * g.w_out + ox] as f64;
                let mut best: Option<(usize, f32)> = None;
                for i in 0..g.k {
                    for j in 0..g.k {
                        let iy = (oy * g.stride + i) as isize - g.pad[0] as isize;
                        let ix = (ox * g.stride + j) as isize - g.pad[1] as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let at = (p * g.h + iy as usize) * g.w + ix as usize;
                        match kind {
                            PoolKind::Avg => dx[at] += d / (g.k * g.k) as f64,
                            PoolKind::Max => {
                                if best.is_none_or(|(_, b)| x[at] > b) {
                                    best = Some((at, x[at]));
                                }
                            }
                        }
                    }
                }
                if let (PoolKind::Max, Some((at, _))) = (kind, best) {
                    dx[at] += d;
                }
            }
        }
    }
    dx
}

fn conv_backward_case(g: ConvGeom, images: usize) {
    use snn_runtime::cpu::ops;
    let what = format!("{g:?} x{images}");
    let (xi, yi) = (g.c_in * g.h * g.w, g.c_out * g.h_out * g.w_out);
    let x = rand_vec(images * xi, 21, -1.0, 1.0);
    let w = rand_vec(g.c_out * xi / (g.h * g.w) * g.kh * g.kw, 22, -1.0, 1.0);
    let dy = rand_vec(images * yi, 23, -1.0, 1.0);
    // Input gradient: written, then accumulated onto a prior value.
    let want = naive_conv_dx(&dy, &w, images, &g);
    let mut dx = vec![f32::NAN; images * xi];
    ops::conv2d_dx(&dy, &w, &mut dx, images, &g, false).unwrap();
    assert_close(&dx, &want, 1e-5, &format!("conv2d_dx {what}"));
    let mut dx = vec![0.5f32; images * xi];
    ops::conv2d_dx(&dy, &w, &mut dx, images, &g, true).unwrap();
    let want_acc: Vec<f64> = want.iter().map(|v| v + 0.5).collect();
    assert_close(
        &dx,
        &want_acc,
        1e-5,
        &format!("conv2d_dx accumulate {what}"),
    );
    // Weight and bias gradients accumulate onto what is there.
    let (want_w, want_b) = naive_conv_dw(&x, &dy, images, &g);
    let mut dw = vec![0.25f32; want_w.len()];
    let mut db = vec![-0.25f32; g.c_out];
    ops::conv2d_dw(&x, &dy, &mut dw, Some(&mut db), images, &g).unwrap();
    let want_w: Vec<f64> = want_w.iter().map(|v| v + 0.25).collect();
    let want_b: Vec<f64> = want_b.iter().map(|v| v - 0.25).collect();
    // Sums over every image and position: f32 rounding grows with their number.
    assert_close(&dw, &want_w, 1e-4, &format!("conv2d_dw weight {what}"));
    assert_close(&db, &want_b, 1e-4, &format!("conv2d_dw bias {what}"));
    // Deterministic: the same bits again (the parallel path sums fixed chunks in order).
    let mut dw2 = vec![0.25f32; want_w.len()];
    ops::conv2d_dw(&x, &dy, &mut dw2, None, images, &g).unwrap();
    assert_eq!(dw, dw2, "conv2d_dw is deterministic {what}");
}

#[test]
fn conv_backward_matches_naive() {
    // Stride 2, padding 1, non-square image, several channels.
    conv_backward_case(conv_geom(3, 9, 7, 4, 3, 3, 2, 1), 5);
    // Non-square kernel; pointwise (the GEMM alone); a large stride with padding 2.
    conv_backward_case(conv_geom(3, 9, 7, 4, 3, 2, 1, 1), 3);
    conv_backward_case(conv_geom(3, 6, 5, 5, 1, 1, 1, 0), 4);
    conv_backward_case(conv_geom(2, 8, 8, 3, 5, 5, 3, 2), 2);
    // Enough work for the parallel paths.
    conv_backward_case(conv_geom(8, 16, 12, 16, 3, 3, 1, 1), 24);
    conv_backward_case(conv_geom(8, 16, 16, 16, 1, 1, 1, 0), 24);
}

fn pool_backward_case(kind: PoolKind, g: PoolGeom, images: usize, quantised: bool) {
    use snn_runtime::cpu::ops;
    let what = format!("{kind:?} {g:?} x{images}");
    let (xi, yi) = (g.c * g.h * g.w, g.c * g.h_out * g.w_out);
    // Quantised values (spikes-like): many ties, which max pooling breaks like the forward.
    let x = if quantised {
        quant_vec(images * xi, 31, 0.0, 1.0, 2)
    } else {
        rand_vec(images * xi, 31, -1.0, 0.5)
    };
    let dy = rand_vec(images * yi, 32, -1.0, 1.0);
    let want = naive_pool_dx(&x, &dy, images, kind, &g);
    let mut dx = vec![f32::NAN; images * xi];
    ops::pool2d_dx(&x, &dy, &mut dx, images, kind, &g, false).unwrap();
    assert_close(&dx, &want, 1e-6, &format!("pool2d_dx {what}"));
    let mut dx = vec![1.0f32; images * xi];
    ops::pool2d_dx(&x, &dy, &mut dx, images, kind, &g, true).unwrap();
    let want: Vec<f64> = want.iter().map(|v| v + 1.0).collect();
    assert_close(&dx, &want, 1e-6, &format!("pool2d_dx accumulate {what}"));
    // The gradient of the forward's own output: the max routes exactly to cells that hold
    // the window's value.
    if kind == PoolKind::Max {
        let mut y = vec![0.0f32; images * yi];
        ops::pool2d(&x, &mut y, images, kind, &g).unwrap();
        let mut dx = vec![0.0f32; images * xi];
        ops::pool2d_dx(&x, &y, &mut dx, images, kind, &g, false).unwrap();
        for (i, &v) in dx.iter().enumerate() {
            if v != 0.0 {
                assert!(y.contains(&x[i]), "{what}: cell {i} got a gradient");
            }
        }
    }
}

#[test]
fn pool_backward_matches_naive() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for quantised in [false, true] {
            // Padding 1, stride 2, a non-square image.
            pool_backward_case(kind, pool_geom(3, 9, 7, 3, 2, 1), 4, quantised);
            // Overlapping windows (stride 1), padding 1: cells in several windows.
            pool_backward_case(kind, pool_geom(2, 5, 6, 3, 1, 1), 3, quantised);
            // Windows that skip cells (stride > k), the classic 2x2.
            pool_backward_case(kind, pool_geom(2, 9, 8, 2, 3, 0), 2, quantised);
            pool_backward_case(kind, pool_geom(4, 8, 8, 2, 2, 0), 6, quantised);
            pool_backward_case(kind, pool_geom(4, 32, 32, 2, 2, 0), 16, quantised);
            pool_backward_case(
                kind,
                pool_geom_sides(3, 9, 9, 2, 2, [1, 0, 0, 1]),
                3,
                quantised,
            );
            pool_backward_case(
                kind,
                pool_geom_sides(2, 9, 7, 3, 2, [0, 2, 0, 2]),
                2,
                quantised,
            );
        }
    }
    // Ties: the first cell of the window (row-major) gets the gradient, like torch.
    let g = pool_geom(1, 2, 2, 2, 2, 0);
    let mut dx = [0.0f32; 4];
    snn_runtime::cpu::ops::pool2d_dx(
        &[1.0, 1.0, 1.0, 0.0],
        &[3.0],
        &mut dx,
        1,
        PoolKind::Max,
        &g,
        false,
    )
    .unwrap();
    assert_eq!(dx, [3.0, 0.0, 0.0, 0.0]);
    // A window partly in the padding: a negative maximum still wins over the padding.
    let g = pool_geom(1, 1, 1, 3, 1, 1);
    snn_runtime::cpu::ops::pool2d_dx(&[-2.0], &[5.0], &mut dx[..1], 1, PoolKind::Max, &g, false)
        .unwrap();
    assert_eq!(dx[0], 5.0);
    snn_runtime::cpu::ops::pool2d_dx(&[-2.0], &[9.0], &mut dx[..1], 1, PoolKind::Avg, &g, false)
        .unwrap();
    assert_eq!(dx[0], 1.0);
}

#[test]
fn backward_ops_reject_bad_lengths() {
    use snn_runtime::cpu::ops;
    let g = conv_geom(1, 4, 4, 1, 3, 3, 1, 0);
    let e = ops::conv2d_dx(&[0.0; 3], &[0.0; 9], &mut [0.0; 16], 1, &g, false).unwrap_err();
    assert!(e.to_string().contains("conv2d_dx output gradient"), "{e}");
    let e = ops::conv2d_dw(&[0.0; 16], &[0.0; 4], &mut [0.0; 8], None, 1, &g).unwrap_err();
    assert!(e.to_string().contains("conv2d_dw weight gradient"), "{e}");
    let mut bad = g;
    bad.w_out = 3;
    assert!(ops::conv2d_dx(&[0.0; 6], &[0.0; 9], &mut [0.0; 16], 1, &bad, false).is_err());
    let pg = pool_geom(1, 4, 4, 2, 2, 0);
    let e = ops::pool2d_dx(
        &[0.0; 16],
        &[0.0; 4],
        &mut [0.0; 15],
        1,
        PoolKind::Max,
        &pg,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("pool2d_dx input gradient"), "{e}");
}

/// A delayed conv of a static image inside a training plan: the weight gradient through the
/// executor (static input, sequence gradient: one block per step, summed), and the plan
/// validator on the backward ops.
#[test]
fn conv_weight_gradient_through_a_plan() {
    let g = conv_geom(2, 7, 6, 3, 3, 2, 2, 1);
    let (t, b, delay) = (4, 3, 1);
    let (xi, yi) = (2 * 7 * 6, 3 * g.h_out * g.w_out);
    let mut p = plan("conv_bwd");
    p.buffers = vec![
        buf("x", Extent::Static, xi, 0),
        buf("y", Extent::Seq, yi, 1),
        buf("grad.y", Extent::Seq, yi, 2),
    ];
    p.weights = vec![weight("c.weight", &[3, 2, 3, 2]), weight("c.bias", &[3])];
    p.inputs = vec![input("x", 0, &[2, 7, 6], false)];
    p.outputs = vec![output("y", OutputKind::Trace, 1, &[3, g.h_out, g.w_out])];
    p.ops = vec![
        Op::Zero { buf: 1 },
        Op::Conv2d(Conv2d {
            x: 0,
            w: 0,
            bias: Some(1),
            y: 1,
            geom: g,
            time: TimeSel::All { delay },
            accumulate: false,
            sparse: false,
            wave: false,
        }),
    ];
    p.train = Some(TrainPlan {
        input_grads: vec![],
        backward: vec![Op::Conv2dDw(Conv2dDw {
            x: 0,
            dy: 2,
            w: 0,
            bias: Some(1),
            geom: g,
            time: TimeSel::All { delay },
            sparse: false,
        })],
        loss: LossDecl {
            kind: LossKind::CrossEntropyMaxMembrane,
            output: 0,
            grad: 2,
        },
        regularizers: vec![],
        settings: TrainSettings {
            optimizer: OptimizerDecl {
                kind: OptimizerKind::Adam,
                lr: 1e-3,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: LrScheduleDecl::Constant,
            warmup: 0,
            epochs: 1,
            batch: b,
            data: None,
            clip: None,
            validation: 0,
        },
    });
    let mut bad = p.clone();
    if let Some(tp) = &mut bad.train {
        tp.backward[0] = Op::Conv2dDw(Conv2dDw {
            x: 0,
            dy: 2,
            w: 0,
            bias: Some(0),
            geom: g,
            time: TimeSel::All { delay },
            sparse: false,
        });
    }
    fix_slots(&mut bad);
    let e = Session::new(bad, KernelTable::empty())
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d_dw"), "{e}");

    let mut s = session(p);
    randomize(&mut s);
    let x = Tensor::new(vec![b, 2, 7, 6], rand_vec(b * xi, 41, -1.0, 1.0)).unwrap();
    s.run(std::slice::from_ref(&x), t, b).unwrap();
    let gy = rand_vec(t * b * yi, 42, -1.0, 1.0);
    s.backward(&[&gy], t, b).unwrap();
    let grads = s.grads().unwrap();
    // Steps delay..T read the image: the gradient sums those steps' dy against it.
    let mut want_w = vec![0.0; grads[0].len()];
    let mut want_b = vec![0.0; 3];
    for st in delay..t {
        let (dw, db) = naive_conv_dw(&x.data, &gy[st * b * yi..(st + 1) * b * yi], b, &g);
        want_w.iter_mut().zip(&dw).for_each(|(a, v)| *a += v);
        want_b.iter_mut().zip(&db).for_each(|(a, v)| *a += v);
    }
    assert_close(&grads[0], &want_w, 1e-5, "conv weight gradient (plan)");
    assert_close(&grads[1], &want_b, 1e-5, "conv bias gradient (plan)");
}

/// The validator refuses malformed backward ops with an error naming them.
#[test]
fn backward_ops_are_validated() {
    let g = conv_geom(2, 5, 4, 3, 3, 3, 1, 1);
    let pg = pool_geom(2, 5, 4, 2, 2, 0);
    let base = |ops: Vec<Op>| {
        let mut p = plan("v");
        p.buffers = vec![
            buf("x", Extent::Seq, 40, 0),
            buf("gy", Extent::Seq, 60, 1),
            buf("gx", Extent::Seq, 40, 2),
            buf("gp", Extent::Seq, 2 * pg.h_out * pg.w_out, 3),
            buf("xs", Extent::Static, 40, 4),
        ];
        p.weights = vec![weight("c.weight", &[3, 2, 3, 3])];
        p.ops = ops;
        fix_slots(&mut p);
        Session::new(p, KernelTable::empty())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let all = TimeSel::All { delay: 0 };
    assert_eq!(
        base(vec![Op::Conv2dDx(Conv2dDx {
            dy: 1,
            w: 0,
            dx: 2,
            geom: g,
            time: all,
            accumulate: false
        })]),
        ""
    );
    let e = base(vec![Op::Conv2dDx(Conv2dDx {
        dy: 3,
        w: 0,
        dx: 2,
        geom: g,
        time: all,
        accumulate: false,
    })]);
    assert!(e.contains("conv2d_dx") && e.contains("features"), "{e}");
    let mut bad = g;
    bad.h_out = 9;
    let e = base(vec![Op::Conv2dDw(Conv2dDw {
        x: 0,
        dy: 1,
        w: 0,
        bias: None,
        geom: bad,
        time: all,
        sparse: false,
    })]);
    assert!(
        e.contains("conv2d_dw") && e.contains("inconsistent geometry"),
        "{e}"
    );
    let pool = |x: BufId, dx: BufId| {
        vec![Op::Pool2dDx(Pool2dDx {
            x,
            dy: 3,
            dx,
            kind: PoolKind::Max,
            geom: pg,
            time: all,
            accumulate: false,
        })]
    };
    assert_eq!(base(pool(0, 2)), "");
    let e = base(pool(4, 2));
    assert!(e.contains("pool2d_dx") && e.contains("layout"), "{e}");
    let e = base(pool(2, 2));
    assert!(e.contains("pool2d_dx") && e.contains("another slot"), "{e}");
    let e = base(pool(0, 3));
    assert!(e.contains("pool2d_dx") && e.contains("share slot"), "{e}");
}

/// The row-update path of `time_mix` by column blocks (several blocks, a ragged last one,
/// both threading paths) gives the naive loop's bits: the same summation order per value.
/// The band weight gradient by blocks agrees with an f64 reference.
#[test]
fn time_mix_band_by_column_blocks() {
    use snn_runtime::cpu::ops;
    let (t, k) = (12, 3);
    for cols in [7, 5000, 70_001] {
        // A band: a[r, j] for r - k < j <= r, one zero inside the band.
        let mut a = vec![0f32; t * t];
        for r in 0..t {
            for j in (r + 1).saturating_sub(k)..=r {
                a[r * t + j] = if (r, j) == (5, 4) {
                    0.0
                } else {
                    0.25 + 0.125 * ((r * 7 + j * 3) % 5) as f32
                };
            }
        }
        let bias: Vec<f32> = (0..t).map(|r| r as f32 * 0.5 - 2.0).collect();
        let x = rand_vec(t * cols, 31, -1.0, 1.0);
        let dy = rand_vec(t * cols, 37, -1.0, 1.0);
        for accumulate in [false, true] {
            let start = rand_vec(t * cols, 41, -1.0, 1.0);
            let mut y = start.clone();
            ops::time_mix(&a, Some(&bias), &x, &mut y, t, t, cols, accumulate).unwrap();
            for r in 0..t {
                for c in 0..cols {
                    let mut v = if accumulate {
                        start[r * cols + c] + bias[r]
                    } else {
                        bias[r]
                    };
                    for j in 0..t {
                        if a[r * t + j] != 0.0 {
                            v += a[r * t + j] * x[j * cols + c];
                        }
                    }
                    assert_eq!(
                        y[r * cols + c].to_bits(),
                        v.to_bits(),
                        "cols {cols} ({r}, {c})"
                    );
                }
            }
        }
        let mut g = vec![f32::NAN; t * t];
        let mut sums = vec![0f32; t];
        ops::time_mix_dw(&dy, &x, &mut g, Some(&mut sums), t, t, cols, Some(k)).unwrap();
        for r in 0..t {
            let s: f64 = dy[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum();
            assert!(
                (sums[r] as f64 - s).abs() <= 1e-6 * (1.0 + s.abs()),
                "sum {r}"
            );
            for j in 0..t {
                let want: f64 = if r >= j && r - j < k {
                    (0..cols)
                        .map(|c| dy[r * cols + c] as f64 * x[j * cols + c] as f64)
                        .sum()
                } else {
                    0.0
                };
                assert!(
                    (g[r * t + j] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "cols {cols} g[{r}, {j}] = {} vs {want}",
                    g[r * t + j]
                );
            }
        }
    }
}

/// The GEMM path of `time_mix` (more than `SPARSE_ROW` non-zeros per row) by column blocks:
/// several blocks, a ragged last one, both threading paths, bias and accumulation.
#[test]
fn time_mix_dense_by_column_blocks() {
    use snn_runtime::cpu::ops;
    let t = 40;
    let a = rand_vec(t * t, 51, -0.5, 0.5);
    let bias = rand_vec(t, 52, -1.0, 1.0);
    for cols in [9, 3000, 70_001] {
        let x = rand_vec(t * cols, 53, -1.0, 1.0);
        for accumulate in [false, true] {
            for with_bias in [false, true] {
                let start = rand_vec(t * cols, 54, -1.0, 1.0);
                let mut y = start.clone();
                let b = with_bias.then_some(&bias[..]);
                ops::time_mix(&a, b, &x, &mut y, t, t, cols, accumulate).unwrap();
                for r in 0..t {
                    for c in (0..cols).step_by(7) {
                        let mut want = if accumulate {
                            start[r * cols + c] as f64
                        } else {
                            0.0
                        };
                        if with_bias {
                            want += bias[r] as f64;
                        }
                        for j in 0..t {
                            want += a[r * t + j] as f64 * x[j * cols + c] as f64;
                        }
                        let got = y[r * cols + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "cols {cols} acc {accumulate} bias {with_bias} ({r}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
