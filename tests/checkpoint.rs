//! `checkpoint = recompute` (states recomputed per layer before its backward kernel) gives
//! the same outputs and gradients as `checkpoint = save`, bit for bit, in less memory.

mod common;

use snnc::{Compiler, Options};

fn load(src: &str) -> snn_runtime::Session {
    common::session_from_str("recompute.snn", src, common::train_opts())
}

#[test]
fn recompute_gives_the_saved_gradients_in_less_memory() {
    let src = std::fs::read_to_string(common::root().join("tests/in/train/recompute.snn")).unwrap();
    assert!(src.contains("checkpoint = recompute"));
    let saved = src.replace("checkpoint = recompute", "checkpoint = save");
    let (t, b) = (12, 4);
    let x = snn_runtime::Tensor {
        shape: vec![t, b, 6],
        data: (0..t * b * 6)
            .map(|i| ((i * 53 % 29) as f32 / 29.0) * 1.5)
            .collect(),
    };
    let mut results = vec![];
    for text in [&src, &saved] {
        let mut s = load(text);
        s.init_weights(5).unwrap();
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let counts = out[0].1.data.clone();
        // dL/dcounts of some loss: any fixed tensor exercises the whole backward pass.
        let g: Vec<f32> = (0..b * 3).map(|i| (i as f32 - 5.0) * 0.1).collect();
        s.backward(&[&g], t, b).unwrap();
        let bytes: usize = s.slot_sizes(t, b).unwrap().iter().sum::<usize>() * 4;
        results.push((counts, s.grads().unwrap(), bytes));
    }
    let (rc, rg, rbytes) = &results[0];
    let (sc, sg, sbytes) = &results[1];
    assert_eq!(rc, sc, "forward counts");
    assert!(sc.iter().sum::<f32>() > 0.0, "the output layer spikes");
    for (i, (a, b)) in rg.iter().zip(sg).enumerate() {
        assert_eq!(a, b, "gradient of weight {i}");
        assert!(b.iter().any(|&v| v != 0.0), "weight {i} gets a gradient");
    }
    // Saved states: s1's v of 16 neurons (its backward, saved after the update, needs no
    // i_syn), s2's and s3's v (12, 3). With `save` all 31 [T, B] planes are live at the turn
    // of forward to backward; with `recompute` none is, and at most one layer's during its
    // backward step.
    let plane = t * b * 4;
    assert!(
        rbytes + 15 * plane <= *sbytes,
        "recompute {rbytes} B vs save {sbytes} B"
    );
}

/// The recompute kernel exists in both printed back ends and precedes each backward kernel.
#[test]
fn recompute_kernels_precede_backward_kernels() {
    let src = std::fs::read_to_string(common::root().join("tests/in/train/recompute.snn")).unwrap();
    let mut c = Compiler::new(Options {
        train: true,
        ..Options::default()
    });
    let parsed = c.parse_str("recompute.snn", &src).unwrap();
    let p = c.compile(&parsed).unwrap();
    let names: Vec<&str> = p.kernels.iter().map(|k| k.symbol.as_str()).collect();
    for pop in ["s1", "s2", "s3"] {
        let r = names
            .iter()
            .position(|n| n.ends_with(&format!("_{pop}_recompute")))
            .unwrap_or_else(|| panic!("no recompute kernel for {pop} in {names:?}"));
        let bw = names
            .iter()
            .position(|n| n.ends_with(&format!("_{pop}_backward")))
            .unwrap();
        assert_eq!(r + 1, bw, "{names:?}");
        // The forward kernel of the population stores no saved state.
        let fwd = p
            .kernels
            .iter()
            .find(|k| k.symbol.ends_with(&format!("_{pop}")))
            .unwrap();
        assert!(
            fwd.args.iter().all(|a| !a.name.starts_with("save_")),
            "{fwd}"
        );
    }
}

/// A state the backward never reads is not saved, and a population that saves nothing has
/// nothing to recompute: an LI readout's backward is a function of the incoming adjoints
/// (`StepAdjoint::saves`). No `out.save.v` buffer, no store of it, no recompute kernel for
/// `out`, and the same gradients as `checkpoint = save`.
#[test]
fn an_li_readout_saves_and_recomputes_nothing() {
    let src = |checkpoint: &str| {
        format!(
            "model m {{\n  T = 10\n  batch = 3\n  input x: [T, 5]\n  h = dense(x, 8, init_gain = 3.0)\n  s = LIF(h, tau = 2.0)\n  o = dense(s, 4, init_gain = 3.0)\n  out = LI(o, tau = 4.0)\n  output trace(out.v)\n  train {{\n    loss = cross_entropy(max(out.v))\n    checkpoint = {checkpoint}\n  }}\n}}\n"
        )
    };
    let mut grads = vec![];
    for checkpoint in ["recompute", "save"] {
        let text = src(checkpoint);
        let mut c = Compiler::new(common::train_opts());
        let parsed = c.parse_str("m.snn", &text).unwrap();
        let p = c.compile(&parsed).unwrap();
        let dump = snnc::ir::dump::program(&p);
        assert!(!dump.contains("out.save"), "{dump}");
        assert!(dump.contains("s.save.v"), "{dump}");
        let names: Vec<&str> = p.kernels.iter().map(|k| k.symbol.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.ends_with("_out_recompute")),
            "{names:?}"
        );
        assert_eq!(
            names.iter().any(|n| n.ends_with("_s_recompute")),
            checkpoint == "recompute",
            "{names:?}"
        );
        let mut s = load(&text);
        s.init_weights(3).unwrap();
        let (t, b) = (10, 3);
        let x = s.random_inputs(t, b, 9);
        s.run(&x, t, b).unwrap();
        let g: Vec<f32> = (0..t * b * 4)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
            .collect();
        s.backward(&[&g], t, b).unwrap();
        grads.push(s.grads().unwrap());
    }
    assert_eq!(grads[0], grads[1]);
    assert!(grads[0].iter().all(|g| g.iter().any(|&v| v != 0.0)));
}
