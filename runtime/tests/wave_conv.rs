//! The wave form of conv2d (`Conv2d { wave: true }`) against the dense conv of every step
//! and a naive f64 reference, on random cumulative 0/1 waves and on samples that are not
//! waves (which take the dense fallback), on the CPU device and the CUDA device through the
//! host shim (bit-identical to the CPU on waves: the same summation order).

mod common;
use common::*;
use snn_runtime::plan::*;
use snn_runtime::{KernelTable, Session, Tensor};

/// A plan `y = conv(x)` (`accumulate`: `y = conv_dense(x) + conv(x)`, the second op
/// accumulating) whose conv is `wave` or the dense conv of every step.
fn wave_plan(g: ConvGeom, bias: bool, wave: bool, accumulate: bool) -> Plan {
    let mut p = plan("wave_conv");
    p.buffers = vec![
        buf("x", Extent::Seq, g.c_in * g.h * g.w, 0),
        buf("y", Extent::Seq, g.c_out * g.h_out * g.w_out, 1),
    ];
    p.weights = vec![weight("c.weight", &[g.c_out, g.c_in, g.kh, g.kw])];
    if bias {
        p.weights.push(weight("c.bias", &[g.c_out]));
    }
    p.inputs = vec![InputDecl {
        name: "x".into(),
        buffer: 0,
        shape: vec![g.c_in, g.h, g.w],
        time_varying: true,
    }];
    p.outputs = vec![OutputDecl {
        name: "y".into(),
        kind: OutputKind::Trace,
        buffer: 1,
        shape: vec![g.c_out, g.h_out, g.w_out],
    }];
    let conv = |wave: bool, accumulate: bool| {
        Op::Conv2d(Conv2d {
            x: 0,
            w: 0,
            bias: if bias { Some(1) } else { None },
            y: 1,
            geom: g,
            time: TimeSel::All { delay: 0 },
            accumulate,
            sparse: false,
            wave,
        })
    };
    p.ops = if accumulate {
        vec![conv(false, false), conv(wave, true)]
    } else {
        vec![conv(wave, false)]
    };
    fix_slots(&mut p);
    p
}

/// A `[t, b, f]` cumulative wave: input `i` of sample `s` fires at a random step or never.
/// Samples listed in `broken` are not waves: one has a 1 followed by a 0, the next a 0.5.
fn waves(t: usize, b: usize, f: usize, seed: u32, broken: &[usize]) -> Vec<f32> {
    let times = rand_vec(b * f, seed, 0.0, (t + 1) as f32);
    let mut x = vec![0.0f32; t * b * f];
    for tt in 0..t {
        for i in 0..b * f {
            x[tt * b * f + i] = if (times[i] as usize) <= tt { 1.0 } else { 0.0 };
        }
    }
    for (k, &s) in broken.iter().enumerate() {
        let i = s * f + f / 2;
        if k % 2 == 0 {
            // Fires at step 0, silent at the last step.
            for tt in 0..t {
                x[tt * b * f + i] = if tt + 1 < t { 1.0 } else { 0.0 };
            }
        } else {
            x[(t - 1) * b * f + i] = 0.5;
        }
    }
    x
}

enum Dev {
    Cpu,
    Shim,
}

fn run(dev: &Dev, p: Plan, w: &[Vec<f32>], x: &Tensor, t: usize, b: usize) -> Vec<f32> {
    let mut s = match dev {
        Dev::Cpu => Session::new(p, KernelTable::empty()).unwrap(),
        Dev::Shim => {
            let dir = temp_dir("wave_conv_shim");
            Session::new_cuda_shim(p, "", &dir).unwrap()
        }
    };
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    for (n, v) in names.iter().zip(w) {
        s.set_weight(n, v).unwrap();
    }
    let outs = s.run(std::slice::from_ref(x), t, b).unwrap();
    outs.into_iter()
        .find(|(o, _)| o.name == "y")
        .unwrap()
        .1
        .data
}

/// Wave vs dense vs naive for one geometry; returns the wave output.
#[allow(clippy::too_many_arguments)]
fn check(
    dev: &Dev,
    g: ConvGeom,
    bias: bool,
    accumulate: bool,
    t: usize,
    b: usize,
    broken: &[usize],
) -> Vec<f32> {
    let f = g.c_in * g.h * g.w;
    let mut w = vec![rand_vec(g.c_out * g.c_in * g.kh * g.kw, 11, -1.0, 1.0)];
    if bias {
        w.push(rand_vec(g.c_out, 12, -1.0, 1.0));
    }
    let x = Tensor::new(vec![t, b, g.c_in, g.h, g.w], waves(t, b, f, 13, broken)).unwrap();
    let what = format!("{g:?} bias {bias} accumulate {accumulate} t {t} b {b} broken {broken:?}");
    let wave = run(dev, wave_plan(g, bias, true, accumulate), &w, &x, t, b);
    let dense = run(dev, wave_plan(g, bias, false, accumulate), &w, &x, t, b);
    let mut naive = naive_conv(&x.data, &w[0], w.get(1).map(|v| &v[..]), t * b, &g);
    // The scale of each output's f32 sum: the sum of the magnitudes of its terms (x is 0/1
    // on waves, |x| <= 1 elsewhere). Another summation order moves a sum by a few f32
    // roundings of that scale.
    let abs: Vec<Vec<f32>> = w
        .iter()
        .map(|v| v.iter().map(|a| a.abs()).collect())
        .collect();
    let xa: Vec<f32> = x.data.iter().map(|a| a.abs()).collect();
    let mut scale = naive_conv(&xa, &abs[0], abs.get(1).map(|v| &v[..]), t * b, &g);
    if accumulate {
        naive.iter_mut().for_each(|v| *v *= 2.0);
        scale.iter_mut().for_each(|v| *v *= 2.0);
    }
    for (i, ((&wv, &dv), (&nv, &sc))) in wave
        .iter()
        .zip(&dense)
        .zip(naive.iter().zip(&scale))
        .enumerate()
    {
        let tol = 1e-6 * sc.max(1.0);
        assert!(
            (wv as f64 - dv as f64).abs() <= tol && (wv as f64 - nv).abs() <= tol,
            "{what}: element {i}: wave {wv}, dense {dv}, f64 {nv}, tolerance {tol}"
        );
    }
    wave
}

/// Strides, padding, bias, odd shapes, 1x1 kernels, more steps than the CUDA kernel's
/// 32-step window, an accumulating conv, and non-wave samples.
fn cases() -> Vec<(ConvGeom, bool, bool, usize, usize, Vec<usize>)> {
    vec![
        (
            conv_geom(2, 9, 9, 6, 5, 5, 1, 2),
            false,
            false,
            6,
            3,
            vec![],
        ),
        (conv_geom(3, 9, 7, 4, 3, 3, 2, 1), true, false, 5, 2, vec![]),
        (
            conv_geom(3, 7, 5, 5, 2, 3, 1, 1),
            true,
            false,
            4,
            3,
            vec![1],
        ),
        (conv_geom(4, 6, 5, 3, 1, 1, 1, 0), true, false, 3, 2, vec![]),
        (
            conv_geom(2, 8, 8, 3, 5, 5, 3, 2),
            false,
            false,
            40,
            2,
            vec![],
        ),
        (
            conv_geom(3, 6, 6, 4, 3, 3, 1, 1),
            true,
            true,
            5,
            4,
            vec![0, 2],
        ),
        (
            conv_geom(5, 5, 5, 7, 2, 2, 1, 1),
            false,
            false,
            3,
            2,
            vec![0, 1],
        ),
    ]
}

#[test]
fn wave_conv_matches_dense_conv_on_cpu() {
    for (g, bias, acc, t, b, broken) in cases() {
        check(&Dev::Cpu, g, bias, acc, t, b, &broken);
    }
}

#[test]
fn wave_conv_on_the_host_shim_matches_cpu() {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP: no C++ compiler for the CUDA host shim");
        return;
    }
    for (g, bias, acc, t, b, broken) in cases() {
        let shim = check(&Dev::Shim, g, bias, acc, t, b, &broken);
        let cpu = check(&Dev::Cpu, g, bias, acc, t, b, &broken);
        if broken.is_empty() {
            // The same summation order on waves: bit for bit.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&shim), bits(&cpu), "shim vs cpu {g:?}");
        }
    }
}

/// A wave conv inside a step loop, with a delay or an event-driven flag is refused.
#[test]
fn wave_conv_needs_the_whole_sequence() {
    let g = conv_geom(2, 5, 5, 3, 3, 3, 1, 1);
    let mut p = wave_plan(g, false, true, false);
    if let Op::Conv2d(c) = &mut p.ops[0] {
        c.time = TimeSel::All { delay: 1 };
    }
    let e = Session::new(p, KernelTable::empty())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wave conv2d reads and writes whole sequences"),
        "{e}"
    );
    let mut p = wave_plan(g, false, true, false);
    if let Op::Conv2d(c) = &mut p.ops[0] {
        c.sparse = true;
    }
    assert!(Session::new(p, KernelTable::empty()).is_err());
}
