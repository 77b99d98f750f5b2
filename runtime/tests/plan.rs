//! Whole plans with hand-written kernels: a LIF population over the whole sequence (one
//! launch, T loop inside the kernel) and the same model as a step loop must agree with a
//! direct computation and with each other; parameters change results without rebuilding.

mod common;
use common::*;
use snn_runtime::plan::*;
use snn_runtime::{KernelTable, RuntimeError, Session, Tensor};

/// LIF over all T: args `[current (Seq), spikes (Seq), counts (Static)]`, params
/// `[tau, v_th]`.
unsafe extern "C" fn lif_seq(a: *const KernelArgs) {
    let a = &*a;
    let cur = *a.bufs;
    let spk = *a.bufs.add(1);
    let cnt = *a.bufs.add(2);
    let tau = *a.params;
    let vth = *a.params.add(1);
    let row = a.batch * a.features;
    for i in a.lo..a.hi {
        let mut v = 0.0f32;
        let mut c = 0.0f32;
        for t in 0..a.t_len {
            let x = *cur.add(t * row + i);
            v += (x - v) / tau;
            let s = if v >= vth { 1.0 } else { 0.0 };
            *spk.add(t * row + i) = s;
            c += s;
            if s > 0.0 {
                v = 0.0;
            }
        }
        *cnt.add(i) = c;
    }
}

/// One LIF step `t_step`: args `[current (Single), v (Single), spikes (Seq), counts (Static)]`.
unsafe extern "C" fn lif_step(a: *const KernelArgs) {
    let a = &*a;
    let cur = *a.bufs;
    let vb = *a.bufs.add(1);
    let spk = *a.bufs.add(2);
    let cnt = *a.bufs.add(3);
    let tau = *a.params;
    let vth = *a.params.add(1);
    let row = a.batch * a.features;
    for i in a.lo..a.hi {
        let x = *cur.add(i);
        let mut v = *vb.add(i);
        v += (x - v) / tau;
        let s = if v >= vth { 1.0 } else { 0.0 };
        *spk.add(a.t_step * row + i) = s;
        *cnt.add(i) += s;
        if s > 0.0 {
            v = 0.0;
        }
        *vb.add(i) = v;
    }
}

const K: usize = 4;
const N1: usize = 3;
const N2: usize = 5;

fn params() -> Vec<ParamDecl> {
    let p = |name: &str, value, check| ParamDecl {
        name: name.into(),
        value,
        check,
    };
    vec![
        p("s1.tau", 2.0, ParamCheck::Positive),
        p("s1.v_th", 1.0, ParamCheck::Any),
        p("s2.tau", 4.0, ParamCheck::Positive),
        p("s2.v_th", 0.5, ParamCheck::Any),
    ]
}

fn common_decls(p: &mut Plan) {
    p.weights = vec![
        weight("fc1.weight", &[N1, K]),
        weight("fc2.weight", &[N2, K]),
    ];
    p.params = params();
    p.inputs = vec![InputDecl {
        name: "x".into(),
        buffer: 0,
        shape: vec![K],
        time_varying: true,
    }];
}

fn outputs(spk1: BufId, cnt1: BufId, spk2: BufId, cnt2: BufId) -> Vec<OutputDecl> {
    let o = |name: &str, kind, buffer, n| OutputDecl {
        name: name.into(),
        kind,
        buffer,
        shape: vec![n],
    };
    vec![
        o("s1.spikes", OutputKind::Spikes, spk1, N1),
        o("s1.counts", OutputKind::Counts, cnt1, N1),
        o("s2.spikes", OutputKind::Spikes, spk2, N2),
        o("s2.counts", OutputKind::Counts, cnt2, N2),
    ]
}

fn gemm(x: BufId, w: WeightId, y: BufId, n: usize, time: TimeSel) -> Op {
    Op::Gemm(Gemm {
        x,
        w,
        bias: None,
        y,
        k: K,
        n,
        time,
        accumulate: false,
        sparse: false,
    })
}

/// x -> fc1 -> s1 and x -> fc2 -> s2, the two populations in one merged launch.
fn seq_plan() -> Plan {
    let mut p = plan("lif_seq");
    common_decls(&mut p);
    p.buffers = vec![
        buf("x", Extent::Seq, K, 0),
        buf("fc1.out", Extent::Seq, N1, 1),
        buf("s1.spikes", Extent::Seq, N1, 2),
        buf("s1.counts", Extent::Static, N1, 3),
        buf("fc2.out", Extent::Seq, N2, 4),
        buf("s2.spikes", Extent::Seq, N2, 5),
        buf("s2.counts", Extent::Static, N2, 6),
    ];
    p.outputs = outputs(2, 3, 5, 6);
    p.kernels = vec![KernelDecl {
        symbol: "lif_seq".into(),
        arity: 3,
        weights: vec![],
    }];
    p.ops = vec![
        gemm(0, 0, 1, N1, TimeSel::All { delay: 0 }),
        gemm(0, 1, 4, N2, TimeSel::All { delay: 0 }),
        Op::Launch {
            kernel: 0,
            groups: vec![
                LaunchGroup {
                    args: vec![1, 2, 3],
                    weights: vec![],
                    params: 0,
                    features: N1,
                },
                LaunchGroup {
                    args: vec![4, 5, 6],
                    weights: vec![],
                    params: 2,
                    features: N2,
                },
            ],
            time: LaunchTime::Seq,
        },
    ];
    fix_slots(&mut p);
    p
}

/// The same network as a step loop with per-step currents and carried membrane state.
fn step_plan() -> Plan {
    let mut p = plan("lif_step");
    common_decls(&mut p);
    p.buffers = vec![
        buf("x", Extent::Seq, K, 0),
        buf("fc1.out", Extent::Single, N1, 1),
        buf("s1.v", Extent::Single, N1, 2),
        buf("s1.spikes", Extent::Seq, N1, 3),
        buf("s1.counts", Extent::Static, N1, 4),
        buf("fc2.out", Extent::Single, N2, 5),
        buf("s2.v", Extent::Single, N2, 6),
        buf("s2.spikes", Extent::Seq, N2, 7),
        buf("s2.counts", Extent::Static, N2, 8),
    ];
    p.outputs = outputs(3, 4, 7, 8);
    p.kernels = vec![KernelDecl {
        symbol: "lif_step".into(),
        arity: 4,
        weights: vec![],
    }];
    p.ops = vec![
        Op::Zero { buf: 2 },
        Op::Zero { buf: 4 },
        Op::Zero { buf: 6 },
        Op::Zero { buf: 8 },
        Op::StepLoop {
            body: vec![
                gemm(0, 0, 1, N1, TimeSel::Step { delay: 0 }),
                gemm(0, 1, 5, N2, TimeSel::Step { delay: 0 }),
                Op::Launch {
                    kernel: 0,
                    groups: vec![
                        LaunchGroup {
                            args: vec![1, 2, 3, 4],
                            weights: vec![],
                            params: 0,
                            features: N1,
                        },
                        LaunchGroup {
                            args: vec![5, 6, 7, 8],
                            weights: vec![],
                            params: 2,
                            features: N2,
                        },
                    ],
                    time: LaunchTime::Step,
                },
            ],
        },
    ];
    fix_slots(&mut p);
    p
}

fn seq_session() -> Session {
    Session::new(seq_plan(), KernelTable::from_fns(vec![lif_seq])).unwrap()
}

fn step_session() -> Session {
    Session::new(step_plan(), KernelTable::from_fns(vec![lif_step])).unwrap()
}

/// Weights in multiples of 1/8 and inputs in multiples of 1/4, so every current is exact
/// in f32 whatever the GEMM's summation order.
fn set_exact_weights(s: &mut Session) -> (Vec<f32>, Vec<f32>) {
    let w1 = quant_vec(N1 * K, 11, -0.25, 0.125, 10);
    let w2 = quant_vec(N2 * K, 12, -0.25, 0.125, 10);
    s.set_weight("fc1.weight", &w1).unwrap();
    s.set_weight("fc2.weight", &w2).unwrap();
    (w1, w2)
}

fn exact_input(t: usize, b: usize) -> Tensor {
    Tensor::new(vec![t, b, K], quant_vec(t * b * K, 13, 0.0, 0.25, 5)).unwrap()
}

/// Direct computation: `(spikes [T, B, N], counts [B, N])`.
fn direct_lif(x: &Tensor, w: &[f32], n: usize, tau: f32, vth: f32) -> (Vec<f32>, Vec<f32>) {
    let (t_len, b) = (x.shape[0], x.shape[1]);
    let mut spk = vec![0.0; t_len * b * n];
    let mut cnt = vec![0.0; b * n];
    for s in 0..b {
        for j in 0..n {
            let mut v = 0.0f32;
            for t in 0..t_len {
                let mut cur = 0.0f32;
                for i in 0..K {
                    cur += x.data[(t * b + s) * K + i] * w[j * K + i];
                }
                v += (cur - v) / tau;
                if v >= vth {
                    spk[(t * b + s) * n + j] = 1.0;
                    cnt[s * n + j] += 1.0;
                    v = 0.0;
                }
            }
        }
    }
    (spk, cnt)
}

fn get(outs: &[(OutputDecl, Tensor)], name: &str) -> Tensor {
    outs.iter().find(|(o, _)| o.name == name).unwrap().1.clone()
}

fn check_against_direct(s: &mut Session, t: usize, b: usize) -> Vec<(OutputDecl, Tensor)> {
    let (w1, w2) = set_exact_weights(s);
    let x = exact_input(t, b);
    let outs = s.run(std::slice::from_ref(&x), t, b).unwrap();
    for (name, w, n) in [("s1", &w1, N1), ("s2", &w2, N2)] {
        let tau = s.param(&format!("{name}.tau")).unwrap();
        let vth = s.param(&format!("{name}.v_th")).unwrap();
        let (spk, cnt) = direct_lif(&x, w, n, tau, vth);
        let got_spk = get(&outs, &format!("{name}.spikes"));
        let got_cnt = get(&outs, &format!("{name}.counts"));
        assert_eq!(got_spk.shape, vec![t, b, n]);
        assert_eq!(got_cnt.shape, vec![b, n]);
        assert_eq!(got_spk.data, spk, "{name} spikes");
        assert_eq!(got_cnt.data, cnt, "{name} counts");
        let total: f32 = cnt.iter().sum();
        assert!(
            total > 0.0 && total < (t * b * n) as f32,
            "{name}: degenerate test ({total} spikes)"
        );
    }
    outs
}

#[test]
fn seq_kernel_matches_direct_computation() {
    let mut s = seq_session();
    check_against_direct(&mut s, 8, 3);
    // A large batch splits the launch into many chunks across threads.
    check_against_direct(&mut s, 8, 2048);
    // Back to a small shape: slots are reallocated, results unaffected.
    check_against_direct(&mut s, 5, 2);
}

#[test]
fn step_loop_matches_seq_kernel() {
    let mut a = seq_session();
    let mut b = step_session();
    for (t, batch) in [(8, 3), (6, 1500)] {
        let oa = check_against_direct(&mut a, t, batch);
        let ob = check_against_direct(&mut b, t, batch);
        assert_eq!(oa.len(), ob.len());
        for ((da, ta), (db, tb)) in oa.iter().zip(&ob) {
            assert_eq!(da.name, db.name);
            assert_eq!(ta, tb, "{}", da.name);
        }
    }
    // Running again gives the same result (state is zeroed by the plan's Zero ops).
    let x = exact_input(8, 3);
    let r1 = b.run(std::slice::from_ref(&x), 8, 3).unwrap();
    let r2 = b.run(&[x], 8, 3).unwrap();
    assert_eq!(r1, r2);
}

#[test]
fn set_param_changes_results_without_rebuilding() {
    for mut s in [seq_session(), step_session()] {
        let before = check_against_direct(&mut s, 10, 4);
        s.set_param("s1.tau", 1.25).unwrap();
        s.set_param("s1.v_th", 0.75).unwrap();
        assert_eq!(s.param("s1.tau"), Some(1.25));
        assert_eq!(s.param_array(), &[1.25, 0.75, 4.0, 0.5]);
        let after = check_against_direct(&mut s, 10, 4);
        assert_ne!(get(&before, "s1.counts"), get(&after, "s1.counts"));
        assert_eq!(get(&before, "s2.counts"), get(&after, "s2.counts"));

        let e = s.set_param("s1.tau", -1.0).unwrap_err();
        assert!(matches!(e, RuntimeError::BadParam { .. }));
        assert!(
            e.to_string().contains("s1.tau") && e.to_string().contains("> 0"),
            "{e}"
        );
        assert!(s.set_param("s1.tau", f32::NAN).is_err());
        assert_eq!(s.param("s1.tau"), Some(1.25));
        let e = s.set_param("s3.tau", 1.0).unwrap_err().to_string();
        assert!(
            e.contains("s3.tau") && e.contains("s1.tau") && e.contains("s2.v_th"),
            "{e}"
        );
        assert_eq!(s.param("nope"), None);
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let mut s = seq_session();
    let x = Tensor::zeros(&[2, 5, 4]);
    let e = s.run(&[x], 3, 5).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RuntimeError::InputShape { .. }));
    assert!(
        msg.contains("`x`") && msg.contains("[2, 5, 4]") && msg.contains("[3, 5, 4]"),
        "{msg}"
    );
    let e = s.run(&[], 3, 5).unwrap_err().to_string();
    assert!(e.contains("1 input") && e.contains("0 given"), "{e}");
    let e = s
        .run(&[Tensor::zeros(&[3, 5, 4])], 0, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t >= 1"), "{e}");
    let bad = Tensor {
        shape: vec![3, 5, 4],
        data: vec![0.0; 7],
    };
    assert!(s.run(&[bad], 3, 5).is_err());
}

#[test]
fn random_inputs_and_deterministic_init() {
    let mut s = seq_session();
    let xs = s.random_inputs(6, 3, 99);
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].shape, vec![6, 3, K]);
    assert!(xs[0].data.iter().all(|&v| (0.0..1.0).contains(&v)));
    assert_eq!(xs, s.random_inputs(6, 3, 99));
    assert_ne!(xs, s.random_inputs(6, 3, 100));
    let outs = s.run(&xs, 6, 3).unwrap();
    assert_eq!(outs.len(), 4);

    // Same seed -> same weights; bound 1/sqrt(fan_in) = 0.5.
    let a = seq_session();
    let b = seq_session();
    let w = a.weight("fc1.weight").unwrap();
    assert_eq!(w, b.weight("fc1.weight").unwrap());
    assert!(w.iter().all(|v| v.abs() <= 0.5));
    assert!(w.iter().any(|&v| v < 0.0) && w.iter().any(|&v| v > 0.0));
    let mut c = seq_session();
    c.init_weights(8).unwrap();
    assert_ne!(w, c.weight("fc1.weight").unwrap());
    assert!(c.weight("nope").is_none());
    let e = c
        .set_weight("fc1.weight", &[1.0; 5])
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 4]") && e.contains("5 values"), "{e}");
    let e = c.set_weight("fc9.weight", &[1.0]).unwrap_err().to_string();
    assert!(e.contains("fc9.weight") && e.contains("fc1.weight"), "{e}");
}

fn invalid(p: Plan, n_kernels: usize) -> String {
    let fns: Vec<KernelFn> = vec![lif_seq; n_kernels];
    match Session::new(p, KernelTable::from_fns(fns)) {
        Ok(_) => panic!("plan accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_plans_are_errors() {
    let e = invalid(seq_plan(), 0);
    assert!(
        e.contains("1 kernel") && e.contains("kernel table 0"),
        "{e}"
    );

    let mut p = seq_plan();
    p.ops[0] = gemm(0, 0, 99, N1, TimeSel::All { delay: 0 });
    assert!(invalid(p, 1).contains("buffer 99"));

    let mut p = seq_plan();
    p.ops[0] = gemm(0, 1, 1, N1, TimeSel::All { delay: 0 });
    let e = invalid(p, 1);
    assert!(
        e.contains("fc2.weight") && e.contains("[5, 4]") && e.contains("[3, 4]"),
        "{e}"
    );

    let mut p = seq_plan();
    if let Op::Launch { groups, .. } = &mut p.ops[2] {
        groups[0].args.pop();
    }
    let e = invalid(p, 1);
    assert!(
        e.contains("2 buffer arguments") && e.contains("takes 3"),
        "{e}"
    );

    let mut p = seq_plan();
    if let Op::Launch { groups, .. } = &mut p.ops[2] {
        groups[0].params = 17;
    }
    assert!(invalid(p, 1).contains("parameter offset 17"));

    let mut p = seq_plan();
    p.ops[0] = gemm(0, 0, 1, N1, TimeSel::Step { delay: 0 });
    assert!(invalid(p, 1).contains("outside a step loop"));

    let mut p = seq_plan();
    p.buffers[1].slot = 0;
    assert!(invalid(p, 1).contains("share slot 0"));

    let mut p = seq_plan();
    p.buffers[2].slot = 42;
    assert!(invalid(p, 1).contains("slot 42"));

    let mut p = seq_plan();
    p.params[0].value = 0.0;
    let e = invalid(p, 1);
    assert!(e.contains("s1.tau") && e.contains("> 0"), "{e}");

    let mut p = seq_plan();
    p.outputs[1].buffer = 2; // counts from a Seq buffer
    assert!(invalid(p, 1).contains("Counts"));

    let mut p = seq_plan();
    p.inputs[0].shape = vec![5];
    assert!(invalid(p, 1).contains("input `x`"));

    let mut p = seq_plan();
    p.params.push(ParamDecl {
        name: "fc1.weight".into(),
        value: 1.0,
        check: ParamCheck::Any,
    });
    assert!(invalid(p, 1).contains("twice"));

    let mut p = step_plan();
    p.ops = vec![Op::StepLoop {
        body: vec![Op::StepLoop { body: vec![] }],
    }];
    assert!(invalid(p, 1).contains("cannot nest"));

    let mut p = step_plan();
    p.ops = vec![Op::StepLoop {
        body: vec![gemm(0, 0, 1, N1, TimeSel::All { delay: 0 })],
    }];
    assert!(invalid(p, 1).contains("inside a step loop"));
}

/// Weight arguments of launches (learnable neuron parameters): one per declared use, of the
/// size the kernel reads, and gradients only in backward ops.
#[test]
fn invalid_weight_arguments_are_errors() {
    let with = |per_neuron: bool, grad: bool, shape: Vec<usize>| {
        let mut p = seq_plan();
        p.weights.push(WeightDecl {
            name: "s.gain".into(),
            shape,
            init: Init::Constant(2.0),
        });
        p.kernels[0].weights = vec![WeightUse { per_neuron, grad }];
        if let Op::Launch { groups, .. } = &mut p.ops[2] {
            for g in groups.iter_mut() {
                g.weights = vec![2];
            }
        }
        p
    };
    // The second group has N2 neurons: a per-neuron weight of N1 elements does not fit it.
    let e = invalid(with(true, false, vec![N1]), 1);
    assert!(
        e.contains("`s.gain` has 3 elements") && e.contains("one per neuron"),
        "{e}"
    );
    let e = invalid(with(false, false, vec![2]), 1);
    assert!(e.contains("has 2 elements, the kernel reads 1"), "{e}");
    let e = invalid(with(false, true, vec![1]), 1);
    assert!(e.contains("outside the backward ops"), "{e}");
    let mut p = with(false, false, vec![1]);
    if let Op::Launch { groups, .. } = &mut p.ops[2] {
        groups[1].weights.clear();
    }
    let e = invalid(p, 1);
    assert!(e.contains("0 weight arguments, the kernel takes 1"), "{e}");
    let mut p = with(false, false, vec![1]);
    p.weights[2].init = Init::Constant(f32::NAN);
    assert!(invalid(p, 1).contains("not finite"));
    let mut p = with(false, false, vec![1]);
    if let Op::Launch { groups, .. } = &mut p.ops[2] {
        groups[0].weights = vec![7];
    }
    assert!(invalid(p, 1).contains("weight 7"));
}

/// Issue 18: the Session API sizes what it allocates against its memory budget before
/// allocating: weights that cannot fit refuse the session, a run over the budget is an
/// error naming the bytes, T, batch and the budget (the compiler adds the layer's location
/// on the CLI path), and a run within it goes ahead.
#[test]
fn memory_budget_refuses_before_allocating() {
    use snn_runtime::budget::{fmt_bytes, Budget};
    let mut p = seq_plan();
    p.weights[0].shape = vec![1 << 50, K];
    let e = Session::new(p, KernelTable::from_fns(vec![lif_seq])).unwrap_err();
    assert!(matches!(e, RuntimeError::MemoryBudget { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("the model's weights need 36.0 PB, over the memory budget (")
            && msg.contains("the largest part is `fc1.weight` (36.0 PB)"),
        "{msg}"
    );

    // An overflowing size is over every budget, not a wrap.
    let mut p = seq_plan();
    p.weights[0].shape = vec![usize::MAX, 3];
    let e = Session::new(p, KernelTable::from_fns(vec![lif_seq])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the model's weights need more than 18.4 EB"),
        "{e}"
    );

    let mut s = seq_session();
    let x = s.random_inputs(8, 2, 1);
    let fp = s.footprint(8, 2);
    s.set_memory_budget(Budget::given(fp.total - 1, "the test's budget"));
    let msg = s.run(&x, 8, 2).unwrap_err().to_string();
    let want = format!(
        "the model needs {} for T=8, batch=2, over the memory budget ({}: the test's budget)",
        fmt_bytes(fp.total),
        fmt_bytes(fp.total - 1)
    );
    assert!(msg.starts_with(&want), "{msg}");
    assert!(msg.contains("hint: lower the batch or T"), "{msg}");
    s.set_memory_budget(Budget::given(fp.total, "the test's budget"));
    s.run(&x, 8, 2).unwrap();
}
