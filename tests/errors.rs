//! Every class of user error gives a diagnostic with the right kind, message and
//! file:line:col; no input makes the compiler panic.

mod common;

use snnc::diag::ErrorKind;
use snnc::{Compiler, Options};

const MLP: &str = "model m {\n  T = 4\n  input x: [3]\n  h = dense(x, 2)\n  s = LIF(h, tau = 2.0)\n  output counts(s)\n}\n";

/// Compile `src`, expect an error of `kind` at `loc` (`test.snn:L:C`) whose message
/// contains `msg` and that carries a hint.
fn expect(src: &str, kind: ErrorKind, loc: &str, msg: &str) {
    let Err((d, at)) = common::compile_str(src) else {
        panic!("expected an error for:\n{src}")
    };
    assert_eq!(d.kind, kind, "kind of `{}`", d.message);
    assert_eq!(at, loc, "location of `{}`", d.message);
    assert!(
        d.message.contains(msg),
        "message `{}` lacks `{msg}`",
        d.message
    );
    assert!(d.hint.is_some(), "`{}` has no hint", d.message);
}

#[test]
fn syntax_error() {
    let src = MLP.replace("dense(x, 2)", "dense(x, 2");
    expect(
        &src,
        ErrorKind::Syntax,
        "test.snn:5:3",
        "syntax error: expected",
    );
    expect(
        "model m { T = 4 input x: [3] h = dense(x, , 2) }",
        ErrorKind::Syntax,
        "test.snn:1:43",
        "expected an argument",
    );
    expect(
        "neuron { }",
        ErrorKind::Syntax,
        "test.snn:1:8",
        "expected a name",
    );
}

#[test]
fn unknown_name() {
    let src = MLP.replace("dense(x, 2)", "dense(y, 2)");
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:4:13",
        "unknown name `y`",
    );
    let src = MLP.replace("tau = 2.0", "tua = 2.0");
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:5:14",
        "has no parameter `tua`",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert_eq!(d.hint.as_deref(), Some("did you mean `tau`?"));
    let src = MLP.replace("counts(s)", "counts(ss)");
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:6:17",
        "unknown name `ss`",
    );
    let src = MLP.replace("output counts(s)", "output trace(s.u)");
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:6:3",
        "has no state `u`",
    );
    // Inside a neuron model's equations.
    let src = format!(
        "neuron N {{\n  state v = 0.0\n  update {{ v = v + I * gain }}\n}}\n{}",
        MLP.replace("LIF(h, tau = 2.0)", "N(h)")
            .replace("counts(s)", "trace(s.v)")
    );
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:3:24",
        "unknown name `gain` in neuron model `N`",
    );
}

#[test]
fn unknown_neuron_model() {
    let src = MLP.replace("LIF(h", "LIFF(h");
    expect(
        &src,
        ErrorKind::UnknownModel,
        "test.snn:5:7",
        "unknown neuron model or operation `LIFF`",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert_eq!(d.hint.as_deref(), Some("did you mean `LIF`?"));
}

#[test]
fn shape_mismatch() {
    let src = "model m {\n  T = 4\n  input x: [3]\n  a = dense(x, 2)\n  b = dense(x, 5)\n  s = LIF(a + b)\n  output counts(s)\n}\n";
    expect(src, ErrorKind::Shape, "test.snn:5:3", "differ in shape");
    let src = "model m {\n  T = 4\n  input x: [1, 8, 8]\n  h = dense(x, 2)\n  s = LIF(h)\n  output counts(s)\n}\n";
    expect(
        src,
        ErrorKind::Shape,
        "test.snn:4:3",
        "dense expects a vector input",
    );
    let src = "model m {\n  T = 4\n  input x: [1, 4, 4]\n  c = conv2d(x, 2, kernel = 7)\n  s = LIF(c)\n  output counts(s)\n}\n";
    expect(
        src,
        ErrorKind::Shape,
        "test.snn:4:3",
        "does not fit the 4x4 input",
    );
}

/// An image dataset against the model's input: 784 values per step, or with
/// `sequence = rows | columns` 28 steps of 28 (`[T, 28]`, `T = 28`). Reported at the input,
/// with a note at the data setting and a hint that names the fix.
#[test]
fn image_data_and_input_shapes() {
    let model = |t: usize, input: &str, data: &str| {
        format!(
            "model m {{\n  T = {t}\n  input x: {input}\n  s = LIF(dense(x, 10))\n  output counts(s)\n  train {{\n    data = {data}\n    loss = cross_entropy(counts(s))\n  }}\n}}\n"
        )
    };
    let rows = "mnist(\"data/mnist\", sequence = rows)";
    // Fine: row by row at T = 28; a plain image static, per step, or as [1, 28, 28].
    for (t, input, data) in [
        (28, "[T, 28]", rows),
        (28, "[T, 28]", "fashion_mnist(sequence = columns)"),
        (5, "[784]", "mnist(\"data/mnist\")"),
        (5, "[T, 784]", "mnist"),
    ] {
        let src = model(t, input, data);
        assert!(common::compile_str(&src).is_ok(), "{src}");
    }
    // A row-sized input without `sequence = rows`: the hint says how to feed rows.
    let src = model(28, "[T, 28]", "mnist(\"data/mnist\")");
    expect(
        &src,
        ErrorKind::Shape,
        "test.snn:3:3",
        "`mnist` gives 784 values per sample, but input `x` takes 28 per step",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert!(
        d.hint.as_deref().unwrap().contains("sequence = rows"),
        "{:?}",
        d.hint
    );
    assert_eq!(d.notes.len(), 1, "a note at the data setting");
    // Rows into an image-sized or static input.
    for input in ["[784]", "[T, 784]", "[28]"] {
        let src = model(28, input, rows);
        expect(
            &src,
            ErrorKind::Shape,
            "test.snn:3:3",
            "`sequence = rows` feeds each image as 28 steps of one 28-pixel row",
        );
    }
    // The wrong number of steps.
    let src = model(25, "[T, 28]", rows);
    expect(
        &src,
        ErrorKind::Shape,
        "test.snn:3:3",
        "feeds each image as 28 steps, but the model has T = 25",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert_eq!(
        d.hint.as_deref(),
        Some("set `T = 28`: one step per image row")
    );
    // An unknown order.
    expect(
        &model(28, "[T, 28]", "mnist(sequence = diagonal)"),
        ErrorKind::BadValue,
        "test.snn:7:29",
        "unknown sequence order `diagonal`",
    );
}

#[test]
fn bad_parameter_value() {
    let src = MLP.replace("tau = 2.0", "tau = -1.0");
    expect(
        &src,
        ErrorKind::BadValue,
        "test.snn:5:20",
        "bad parameter value: `tau = -1` violates `tau > 0`",
    );
    let src = MLP.replace("T = 4", "T = 0");
    expect(
        &src,
        ErrorKind::BadValue,
        "test.snn:2:7",
        "T must be a whole number of time steps >= 1",
    );
    let src = MLP.replace("T = 4", "T = 2.5");
    expect(&src, ErrorKind::BadValue, "test.snn:2:7", "T must be");
    let src = MLP.replace("tau = 2.0", "reset = sideways");
    expect(
        &src,
        ErrorKind::BadValue,
        "test.snn:5:22",
        "`reset` must be one of hard | soft | none",
    );
    let src = MLP.replace("dense(x, 2)", "dense(x, 0)");
    expect(
        &src,
        ErrorKind::BadValue,
        "test.snn:4:16",
        "must be a whole number >= 1",
    );
}

#[test]
fn zero_delay_cycle() {
    let src = "model m {\n  T = 4\n  input x: [3]\n  f = dense(x, 2)\n  r = dense(s, 2)\n  s = LIF(f + r)\n  output counts(s)\n}\n";
    expect(src, ErrorKind::Cycle, "test.snn:5:3", "zero-delay cycle");
    // The same with a delay is a valid recurrent net.
    assert!(common::compile_str(&src.replace("dense(s, 2)", "dense(s, 2, delay = 1)")).is_ok());
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = common::root().join("target").join("errors-test").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn recursive_include() {
    let d = tmp("recursive");
    std::fs::write(d.join("a.snn"), "include \"b.snn\"\n").unwrap();
    std::fs::write(d.join("b.snn"), "// b\ninclude \"a.snn\"\n").unwrap();
    let mut c = Compiler::new(Options::default());
    let e = c.parse_file(&d.join("a.snn")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Include);
    assert!(
        e.message
            .contains("recursive include: a.snn -> b.snn -> a.snn"),
        "{}",
        e.message
    );
    let loc = c.sources.location(e.span.unwrap());
    assert!(loc.ends_with("b.snn:2:1"), "{loc}");
}

#[test]
fn missing_file() {
    let d = tmp("missing");
    let mut c = Compiler::new(Options::default());
    let e = c.parse_file(&d.join("nope.snn")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MissingFile);
    assert!(
        e.message.contains("nope.snn") && e.message.contains("no such file"),
        "{}",
        e.message
    );
    // A missing include points at the include statement.
    std::fs::write(
        d.join("main.snn"),
        format!("include \"lib/neurons.snn\"\n{MLP}"),
    )
    .unwrap();
    let e = c.parse_file(&d.join("main.snn")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MissingFile);
    assert!(c
        .sources
        .location(e.span.unwrap())
        .ends_with("main.snn:1:1"));
}

fn mlp_session() -> (snnc::ir::kernel::Program, snn_runtime::Session) {
    let program = common::compile_str(MLP).unwrap();
    let loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    (program, loaded.session)
}

#[test]
fn corrupt_weights_file() {
    let d = tmp("corrupt");
    let (_, mut s) = mlp_session();
    let p = d.join("w.safetensors");
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = snnc::session::runtime_diag(s.load_weights(&p).unwrap_err());
    assert_eq!(e.kind, ErrorKind::Weights);
    assert!(e.message.contains("w.safetensors"), "{}", e.message);
    let e = snnc::session::runtime_diag(s.load_weights(d.join("absent.safetensors")).unwrap_err());
    assert_eq!(e.kind, ErrorKind::MissingFile);
}

#[test]
fn weights_of_the_wrong_shape() {
    let d = tmp("shape");
    let (_, mut s) = mlp_session();
    let p = d.join("w.safetensors");
    let w = [0.5f32; 12];
    let b = [0.0f32; 2];
    snn_runtime::io::weights::save(
        &p,
        &[
            ("h.weight".into(), vec![4, 3], &w[..]),
            ("h.bias".into(), vec![2], &b[..]),
        ],
    )
    .unwrap();
    let e = snnc::session::runtime_diag(s.load_weights(&p).unwrap_err());
    assert_eq!(e.kind, ErrorKind::Weights);
    assert!(
        e.message.contains("h.weight")
            && e.message.contains("[4, 3]")
            && e.message.contains("[2, 3]"),
        "{}",
        e.message
    );
}

/// Truncations and byte flips of every example never panic: each is a result or a diagnostic.
#[test]
fn no_input_panics_the_compiler() {
    let mut cases = 0;
    for path in common::model_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes = text.as_bytes();
        let mut variants = Vec::new();
        for cut in (0..bytes.len()).step_by(7) {
            variants.push(String::from_utf8_lossy(&bytes[..cut]).into_owned());
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..150 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = bytes.to_vec();
            let i = (x as usize) % b.len();
            let alphabet = b"(){}[]=,.+-*/<>!0123456789 xTNe_\n\"";
            b[i] = alphabet[(x >> 32) as usize % alphabet.len()];
            variants.push(String::from_utf8_lossy(&b).into_owned());
        }
        for v in variants {
            cases += 1;
            let r = std::panic::catch_unwind(|| {
                let mut c = Compiler::new(Options::default());
                if let Ok(p) = c.parse_str("fuzz.snn", &v) {
                    if let Err(d) = c.compile(&p) {
                        let _ = d.render(&c.sources, false);
                    }
                }
            });
            assert!(r.is_ok(), "panic on input:\n{v}");
        }
    }
    assert!(cases > 1000);
}

/// `learn(...)`: only parameters read by a neuron's step can be learned, with a number as
/// the initial value; flags, choices, layer arguments and state initial values cannot.
/// (Without `--train` a learned parameter is still a weight, so the same rules apply.)
#[test]
fn learnable_parameters() {
    let with = |args: &str| MLP.replace("tau = 2.0", args);
    expect(
        &with("tau = learn(2.0), decay_input = learn(true)"),
        ErrorKind::BadArgument,
        "test.snn:5:46",
        "`decay_input` of `LIF` is fixed at compile time and cannot be learned",
    );
    expect(
        &with("tau = learn()"),
        ErrorKind::BadArgument,
        "test.snn:5:20",
        "`learn` needs the initial value",
    );
    expect(
        &with("tau = learn(2.0, per_nueron = true)"),
        ErrorKind::UnknownName,
        "test.snn:5:31",
        "`learn` has no option `per_nueron`",
    );
    expect(
        &with("tau = learn(2.0, per_neuron = 1)"),
        ErrorKind::BadValue,
        "test.snn:5:44",
        "`per_neuron` must be true or false",
    );
    expect(
        &with("tau = learn(x)"),
        ErrorKind::BadValue,
        "test.snn:5:26",
        "parameter `tau` must be a number",
    );
    // The `where` clause holds for the initial value.
    expect(
        &with("tau = learn(-1.0)"),
        ErrorKind::BadValue,
        "test.snn:5:26",
        "bad parameter value: `tau = -1` violates `tau > 0`",
    );
    // The initial state `v = v_reset` would need the gradient of the initial value.
    expect(
        &with("v_reset = learn(0.0)"),
        ErrorKind::BadArgument,
        "test.snn:5:24",
        "`v_reset` cannot be learned: it sets the initial value of state `v`",
    );
    // PLIF's init_tau only sets w's initial value; a parameter no equation reads has no
    // gradient.
    let plif = MLP.replace("LIF(h, tau = 2.0)", "PLIF(h, init_tau = learn(3.0))");
    expect(
        &plif,
        ErrorKind::BadArgument,
        "test.snn:5:26",
        "`init_tau` cannot be learned: it sets the initial value of `w`",
    );
    let unread = format!(
        "neuron N {{\n  param a = 1.0\n  state v = 0.0\n  update {{ v = v + I }}\n}}\n{}",
        MLP.replace("LIF(h, tau = 2.0)", "N(h, a = learn(1.0))")
    );
    expect(
        &unread,
        ErrorKind::BadArgument,
        "test.snn:10:16",
        "`a` cannot be learned: the equations of `N` never read it",
    );
    let plif = MLP.replace("LIF(h, tau = 2.0)", "PLIF(h, init_tau = 1.0)");
    expect(
        &plif,
        ErrorKind::BadValue,
        "test.snn:5:26",
        "violates `init_tau > 1`",
    );
    expect(
        &MLP.replace("dense(x, 2)", "dense(x, 2, init_gain = learn(1.0))"),
        ErrorKind::BadArgument,
        "test.snn:4:31",
        "an argument of `dense` cannot be learned",
    );
    expect(
        &MLP.replace("h = dense(x, 2)", "h = learn(2.0)"),
        ErrorKind::BadArgument,
        "test.snn:4:7",
        "`learn(...)` is not a layer",
    );
}

/// A learned parameter in a recurrent (step-by-step) stage trains through time (it used to
/// be refused): the training plan's backward ops hold a reverse step loop with the backward
/// step kernel of the PLIF population, which adds into its `w`'s gradient.
#[test]
fn learnable_parameter_in_a_recurrent_stage_when_training() {
    use snn_runtime::plan::Op;
    let src = "model m {\n  T = 4\n  input x: [3]\n  f = dense(x, 2)\n  r = dense(s, 2, delay = 1)\n  s = PLIF(f + r)\n  output counts(s)\n  train { loss = cross_entropy(counts(s)) }\n}\n";
    assert!(common::compile_str(src).is_ok());
    let mut c = Compiler::new(Options {
        train: true,
        ..Options::default()
    });
    let parsed = c.parse_str("test.snn", src).unwrap();
    let p = c
        .compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    let backward = &p.plan.train.as_ref().expect("a training plan").backward;
    let body = backward
        .iter()
        .find_map(|op| match op {
            Op::ReverseStepLoop { body } => Some(body),
            _ => None,
        })
        .expect("a reverse step loop");
    let launch = body
        .iter()
        .find_map(|op| match op {
            Op::Launch { kernel, .. } => Some(*kernel),
            _ => None,
        })
        .expect("a backward step kernel");
    let decl = &p.plan.kernels[launch];
    assert!(decl.symbol.ends_with("_s_backward"), "{}", decl.symbol);
    assert!(decl.weights.iter().any(|w| w.grad), "{decl:?}");
}

/// Conv and pooling layers train feed-forward; a conv inside a recurrent cycle is a
/// diagnostic at the recurrent conv (never a panic), with a hint that names what is covered.
#[test]
fn recurrent_conv_when_training() {
    let src = "model m {\n  T = 4\n  input x: [1, 6, 6]\n  p0 = maxpool2d(x, 2)\n  c = conv2d(p0, 2, kernel = 3, padding = 1)\n  r = conv2d(s, 2, kernel = 3, padding = 1, delay = 1)\n  s = LIF(c + r)\n  p = avgpool2d(s, 2)\n  o = LIF(dense(flatten(p), 3))\n  output counts(o)\n  train { loss = cross_entropy(counts(o)) }\n}\n";
    assert!(common::compile_str(src).is_ok());
    let mut c = Compiler::new(Options {
        train: true,
        ..Options::default()
    });
    let parsed = c.parse_str("test.snn", src).unwrap();
    let d = c.compile(&parsed).unwrap_err();
    let at = c.sources.location(d.span.unwrap());
    assert_eq!(d.kind, ErrorKind::BadArgument);
    assert!(
        d.message
            .contains("training through a conv/pool layer inside a recurrent cycle"),
        "{}",
        d.message
    );
    assert_eq!(at, "test.snn:6:3");
    assert!(d.hint.unwrap().contains("conv2d and pooling"));
    // Without the cycle it trains.
    let ff = src.replace(" + r)", ")").replace(
        "  r = conv2d(s, 2, kernel = 3, padding = 1, delay = 1)\n",
        "",
    );
    let parsed = c.parse_str("ff.snn", &ff).unwrap();
    c.compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
}

/// `schedule = parallel` where the equations do not allow it, `schedule = sequential` for a
/// PSN, a PSN in a recurrent cycle, bad `schedule` and `k` values: each a diagnostic at
/// the argument, with a hint.
#[test]
fn impossible_schedules() {
    let model = |pop: &str| {
        format!("model m {{\n  T = 4\n  input x: [T, 3]\n  s = {pop}\n  output spikes(s)\n}}\n")
    };
    // The reset feeds the spikes back into the state.
    let src = model("LIF(x, tau = 2.0, schedule = parallel)");
    expect(
        &src,
        ErrorKind::BadArgument,
        "test.snn:4:25",
        "population `s` cannot run on the parallel schedule: `v` is reset on a spike",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert!(d.hint.unwrap().contains("reset = none"));
    // Not linear: the reset is part of snnTorch's update.
    expect(
        &model("Leaky(x, schedule = parallel)"),
        ErrorKind::BadArgument,
        "test.snn:4:16",
        "is not linear in the state and the input",
    );
    // Linear, but inside a recurrent cycle.
    expect(
        &model("LIF(dense(x, 3) + dense(s, 3, delay = 1), reset = none, schedule = parallel)"),
        ErrorKind::BadArgument,
        "test.snn:4:63",
        "it is in the recurrent cycle {s.dense2, s}",
    );
    // A PSN's matrix reads later steps: no step-by-step form, and no place in a cycle.
    expect(
        &model("PSN(x, schedule = sequential)"),
        ErrorKind::BadArgument,
        "test.snn:4:14",
        "cannot run on the sequential schedule: its `mix full`",
    );
    expect(
        &model("MaskedPSN(x, k = 2, lambda = 1.0, schedule = sequential)"),
        ErrorKind::BadArgument,
        "test.snn:4:41",
        "its `mix masked` reads later steps unless `lambda` = 1",
    );
    expect(
        &model("PSN(dense(x, 3) + dense(s, 3, delay = 1))"),
        ErrorKind::BadArgument,
        "test.snn:4:3",
        "population `s` can be scheduled neither way",
    );
    expect(
        &model("LIF(x, schedule = fast)"),
        ErrorKind::BadValue,
        "test.snn:4:25",
        "`schedule` must be `parallel` or `sequential`",
    );
    expect(
        &model("SlidingPSN(x, k = 0)"),
        ErrorKind::BadValue,
        "test.snn:4:25",
        "bad value: `k = 0` violates `k >= 1`",
    );
    expect(
        &model("SlidingPSN(x, k = 1.5)"),
        ErrorKind::BadValue,
        "test.snn:4:25",
        "`k` must be a whole number",
    );
    // A user-defined mix must be one the compiler knows.
    let src = format!(
        "neuron Mixer {{\n  mix smooth\n  state h = 0.0\n  update {{ h = I }}\n}}\n{}",
        model("Mixer(x)").replace("output spikes(s)", "output trace(s.h)")
    );
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:2:7",
        "unknown mix `smooth`",
    );
}

/// Learned parameters and the parallel schedule: a learned coefficient of the linear step
/// keeps a population sequential (and `schedule = parallel` is refused), and a masked PSN's
/// `lambda` (which builds its time matrix) cannot be learned.
#[test]
fn learned_parameters_and_the_parallel_schedule() {
    let model = |pop: &str| {
        format!("model m {{\n  T = 4\n  input x: [T, 3]\n  s = {pop}\n  output spikes(s)\n}}\n")
    };
    expect(
        &model("LIF(x, tau = learn(2.0), reset = none, schedule = parallel)"),
        ErrorKind::BadArgument,
        "test.snn:4:46",
        "its step reads the learned parameter `tau`",
    );
    let sequential = model("LIF(x, tau = learn(2.0), reset = none)");
    let program = common::compile_str(&sequential).unwrap();
    assert!(
        !program
            .plan
            .ops
            .iter()
            .any(|op| matches!(op, snn::plan::Op::TimeMix(_))),
        "a learned tau runs sequentially"
    );
    expect(
        &model("MaskedPSN(x, k = 2, lambda = learn(0.5))"),
        ErrorKind::BadArgument,
        "test.snn:4:36",
        "`lambda` cannot be learned: it builds the `mix masked` time matrix",
    );
}

/// Training a PSN, a sliding PSN, or a population forced onto the parallel schedule
/// compiles (it was refused before their backward pass existed): the plan has the
/// transposed time products, and the weight gradients of the mix.
#[test]
fn psn_and_the_parallel_schedule_are_differentiable() {
    for (pop, op) in [
        ("PSN(dense(x, 3))", "time_mix_dw grad of s.weight [T, T]"),
        (
            "SlidingPSN(dense(x, 3), k = 2)",
            "time_mix_dw grad of band(s.weight) [k=2]",
        ),
        (
            "LIF(dense(x, 3), reset = none, schedule = parallel)",
            "time_mix_dx grad.s.dense += (toeplitz(s.impulse.v))^T @ grad.s.lin.v",
        ),
    ] {
        let src = format!(
            "model m {{\n  T = 4\n  input x: [T, 3]\n  s = {pop}\n  output counts(s)\n  train {{ loss = cross_entropy(counts(s)) }}\n}}\n"
        );
        let mut c = Compiler::new(Options {
            train: true,
            ..Options::default()
        });
        let parsed = c.parse_str("test.snn", &src).unwrap();
        let dump = c
            .dump_after(&parsed, "lower")
            .unwrap_or_else(|d| panic!("{pop}: {}", d.message));
        assert!(dump.contains(op), "{pop}: no `{op}` in\n{dump}");
    }
}

/// Compile `src`, expect an error of `kind` at `loc` whose message contains `msg`, with a
/// hint and, for a second binding, a note at the first one (`first`).
fn expect_twice(src: &str, kind: ErrorKind, loc: &str, msg: &str, first: &str) {
    expect(src, kind, loc, msg);
    let mut c = Compiler::new(Options::default());
    let parsed = c.parse_str("test.snn", src).unwrap();
    let d = c.compile(&parsed).unwrap_err();
    let notes: Vec<String> = d
        .notes
        .iter()
        .map(|(s, _)| c.sources.location(*s))
        .collect();
    assert_eq!(notes, [first], "notes of `{}`", d.message);
}

/// One binder for every call and the model's settings: positional arguments first, each
/// parameter bound once (by position or by name), each setting set once. The second
/// binding is the error, with a note at the first.
#[test]
fn arguments_and_settings_bound_once() {
    let train = |setting: &str| {
        format!(
            "model m {{\n  T = 4\n  input x: [3]\n  s = LIF(dense(x, 2))\n  output counts(s)\n  train {{\n    loss = cross_entropy(counts(s))\n    {setting}\n  }}\n}}\n"
        )
    };
    expect_twice(
        &train("optimizer = sgd(lr = 0.1, lr = 0.5)"),
        ErrorKind::Duplicate,
        "test.snn:8:31",
        "`lr` is given twice",
        "test.snn:8:21",
    );
    // Positional by position and then by name: the same parameter twice.
    expect_twice(
        &train("optimizer = sgd(0.1, lr = 0.5)"),
        ErrorKind::Duplicate,
        "test.snn:8:26",
        "`lr` is given twice",
        "test.snn:8:21",
    );
    expect_twice(
        &train("optimizer = sgd(momentum = 0.9, 0.01)"),
        ErrorKind::BadArgument,
        "test.snn:8:37",
        "positional argument after a named one",
        "test.snn:8:21",
    );
    // The same binder's other rules, in a train block's call.
    let src = train("optimizer = sgd(lrr = 0.1)");
    expect(
        &src,
        ErrorKind::UnknownName,
        "test.snn:8:21",
        "`sgd` has no argument `lrr`",
    );
    let (d, _) = common::compile_str(&src).unwrap_err();
    assert_eq!(
        d.hint.as_deref(),
        Some("did you mean `lr`? usage: sgd(lr, momentum, nesterov, weight_decay)")
    );
    expect(
        &train("optimizer = sgd(0.1, 0.9, false, 0.0, 1.0)"),
        ErrorKind::BadArgument,
        "test.snn:8:43",
        "too many arguments for `sgd`",
    );
    // `T` is set on line 2 already; the others first on line 6.
    for setting in ["T", "batch", "seed", "dt"] {
        let src = MLP.replace(
            "  output counts(s)\n",
            &format!("  {setting} = 2\n  output counts(s)\n  {setting} = 3\n"),
        );
        let (loc, first) = match setting {
            "T" => ("test.snn:6:3", "test.snn:2:3"),
            _ => ("test.snn:8:3", "test.snn:6:3"),
        };
        expect_twice(
            &src,
            ErrorKind::Duplicate,
            loc,
            &format!("`{setting}` is set twice"),
            first,
        );
    }
    expect_twice(
        &MLP.replace("dense(x, 2)", "dense(x, 2, bias = false, bias = true)"),
        ErrorKind::Duplicate,
        "test.snn:4:33",
        "`bias` is given twice",
        "test.snn:4:19",
    );
    expect_twice(
        &MLP.replace("dense(x, 2)", "dense(x, 2, out_features = 3)"),
        ErrorKind::Duplicate,
        "test.snn:4:19",
        "`out_features` is given twice",
        "test.snn:4:16",
    );
    expect_twice(
        &MLP.replace("tau = 2.0", "tau = 2.0, tau = 3.0"),
        ErrorKind::Duplicate,
        "test.snn:5:25",
        "`tau` is given twice",
        "test.snn:5:14",
    );
}

/// Issue 18: a population's input sum with one operand twice (`h + h`) is refused at the
/// source, located at the repeat with a note at the first, instead of passing `check` and
/// failing in `run` with an internal "two arguments share slot".
#[test]
fn repeated_operand_in_an_input_sum() {
    expect_twice(
        &MLP.replace("LIF(h,", "LIF(h + h,"),
        ErrorKind::BadArgument,
        "test.snn:5:15",
        "`h` appears more than once in the input sum of `s`",
        "test.snn:5:11",
    );
    let src = "model m {\n  T = 4\n  input x: [3]\n  s = LIF(x + dense(x, 3) + x)\n  output counts(s)\n}\n";
    expect_twice(
        src,
        ErrorKind::BadArgument,
        "test.snn:4:29",
        "`x` appears more than once",
        "test.snn:4:11",
    );
    // Distinct operands still sum.
    let src = MLP.replace("LIF(h,", "LIF(h + dense(x, 2),");
    assert!(common::compile_str(&src).is_ok());
}

/// Issue 18: lexical mistakes get a message that says what they are, where they are.
#[test]
fn lexical_mistakes_are_named() {
    // A leading UTF-8 byte-order mark is accepted silently.
    let with_bom = format!("\u{feff}{MLP}");
    assert!(common::compile_str(&with_bom).is_ok());
    expect(
        &MLP.replace("dense(x, 2)", "dense(x, 2.0.0)"),
        ErrorKind::Syntax,
        "test.snn:4:16",
        "malformed number `2.0.0`",
    );
    expect(
        &MLP.replace("tau = 2.0", "tau = 1.5.2"),
        ErrorKind::Syntax,
        "test.snn:5:20",
        "malformed number `1.5.2`",
    );
    expect(
        &MLP.replace("  input x", "  /* input x"),
        ErrorKind::Syntax,
        "test.snn:3:3",
        "unterminated block comment",
    );
    // An earlier mistake is reported first.
    expect(
        &MLP.replace("dense(x, 2)", "dense(x, 2")
            .replace("  output", "  /* output"),
        ErrorKind::Syntax,
        "test.snn:5:3",
        "syntax error: expected",
    );
    // A closed comment, and a `/*` inside a string or a line comment, are no error.
    let ok = MLP.replace("  input x", "  // a /* b\n  /* c */ input x");
    assert!(common::compile_str(&ok).is_ok());
}

/// Issue 18: a whole number too large for its setting says the limit.
#[test]
fn too_large_whole_numbers_name_the_limit() {
    let big = "99999999999999";
    expect(
        &MLP.replace("T = 4", &format!("T = {big}")),
        ErrorKind::BadValue,
        "test.snn:2:7",
        "T must be a whole number of time steps between 1 and 999999999999",
    );
    expect(
        &MLP.replace("dense(x, 2)", &format!("dense(x, {big})")),
        ErrorKind::BadValue,
        "test.snn:4:16",
        "between 1 and 999999999999",
    );
    expect(
        &MLP.replace("[3]", &format!("[{big}]")),
        ErrorKind::BadValue,
        "test.snn:3:13",
        "an input dimension must be a whole number between 1 and 999999999999",
    );
    expect(
        &MLP.replace("T = 4", &format!("T = 4\n  seed = {big}")),
        ErrorKind::BadValue,
        "test.snn:3:10",
        "seed must be a whole number between 0 and 999999999999",
    );
    let train = MLP.replace(
        "output counts(s)",
        &format!("output counts(s)\n  train {{\n    loss = cross_entropy(counts(s))\n    epochs = {big}\n  }}"),
    );
    expect(
        &train,
        ErrorKind::BadValue,
        "test.snn:9:14",
        "`epochs` must be a whole number between 0 and 999999999999",
    );
}

/// Issue 18: an output of something that is not a name (`s.v.v`) names what outputs take.
#[test]
fn output_of_a_field_of_a_field() {
    let src = MLP.replace("output counts(s)", "output trace(s.v.v)");
    expect(
        &src,
        ErrorKind::BadArgument,
        "test.snn:6:16",
        "`trace` outputs a population or one of its states",
    );
}

/// A `train { }` setting written twice in the file is refused (command-line overrides,
/// from another file, still replace it).
#[test]
fn training_setting_given_twice() {
    let src = MLP.replace(
        "output counts(s)\n",
        "output counts(s)\n  train {\n    loss = cross_entropy(counts(s))\n    epochs = 2\n    epochs = 3\n  }\n",
    );
    expect(
        &src,
        ErrorKind::Duplicate,
        "test.snn:10:5",
        "training setting `epochs` is given twice",
    );
}

/// Issue 18: an element count past 64 bits (a layer's per-sample size or its weight) is a
/// located "too large" error, never a wrap or a panic; smaller ones are left to the memory
/// budget.
#[test]
fn element_counts_past_64_bits_are_too_large() {
    expect(
        &MLP.replace("[3]", "[100000000, 100000000, 100000000, 100000000]")
            .replace("dense(x, 2)", "dense(flatten(x), 2)"),
        ErrorKind::Memory,
        "test.snn:3:3",
        "`x` is too large: each sample has 100000000 x 100000000 x 100000000 x 100000000 elements, more than 64 bits count",
    );
    expect(
        &MLP.replace("[3]", "[10000000000]")
            .replace("dense(x, 2)", "dense(x, 10000000000)"),
        ErrorKind::Memory,
        "test.snn:4:3",
        "`h` is too large: its weight has 10000000000 x 10000000000 elements",
    );
    let conv = "model m {\n  T = 4\n  input x: [1, 8, 8]\n  c = conv2d(x, 100000, kernel = 100000000000, padding = 100000000000)\n  s = LIF(c)\n  output counts(s)\n}\n";
    expect(
        conv,
        ErrorKind::Memory,
        "test.snn:4:3",
        "`c` is too large: its weight has 100000 x 1 x 100000000000 x 100000000000 elements",
    );
    // A small kernel with a gigantic padding: the output map itself is past 64 bits.
    expect(
        &conv.replace("kernel = 100000000000", "kernel = 3"),
        ErrorKind::Memory,
        "test.snn:4:3",
        "`c` is too large: each sample has 100000 x 200000000006 x 200000000006 elements",
    );
}

/// Issue 18: over the memory budget, the error says what the model needs for which T and
/// batch, the budget and where it came from, and points at the layer that needs the most.
#[test]
fn memory_budget_names_the_layer() {
    use snn_runtime::exec::Footprint;
    use snn_runtime::Budget;
    let src = MLP
        .replace("[3]", "[1000]")
        .replace("dense(x, 2)", "dense(x, 10000000000)");
    let mut c = Compiler::new(Options::default());
    let parsed = c.parse_str("test.snn", &src).unwrap();
    let program = c.compile(&parsed).expect("a plan is only sizes");
    let m = c.module_until(&parsed, "shapes").unwrap();
    let fp = Footprint::run(&program.plan, 8, 32, false);
    let budget = Budget::given(1_000_000_000, "--max-memory");
    let d = snnc::footprint::check(&m, &fp, &budget, snnc::footprint::RUN_HINT).unwrap_err();
    assert_eq!(d.kind, ErrorKind::Memory);
    assert_eq!(c.sources.location(d.span.unwrap()), "test.snn:4:3");
    assert_eq!(
        d.message,
        "the model needs 94.2 TB for T=8, batch=32 (budget 1.0 GB: --max-memory)"
    );
    assert_eq!(
        d.label,
        "layer `h` (dense, 10000000000 outputs) needs 81.4 TB"
    );
    assert!(d.hint.as_deref().unwrap().contains("raise --max-memory"));
    // The same model under a budget that holds it: no error.
    assert!(snnc::footprint::check(&m, &fp, &Budget::given(fp.total, "x"), "").is_ok());
}

/// Spyker's filters and latency coding (`dog`, `log`, `gabor`, `latency`).
const SPYKER: &str = "model m {\n  T = 15\n  input x: [1, 12, 12]\n  f = dog(x, size = 7, sigmas = [1.0, 2.0])\n  s = latency(f)\n  output spikes(s)\n}\n";

#[test]
fn spyker_filters_and_latency_coding() {
    assert!(common::compile_str(SPYKER).is_ok());
    let with = |from: &str, to: &str| SPYKER.replace(from, to);
    for size in ["6", "0", "2.5"] {
        expect(
            &with("size = 7", &format!("size = {size}")),
            ErrorKind::BadValue,
            "test.snn:4:21",
            "must be an odd window size",
        );
    }
    expect(
        &with("[1.0, 2.0]", "[1.0, 0.0]"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "every element of `sigmas` must be > 0",
    );
    expect(
        &with("[1.0, 2.0]", "[1.0, 2.0, 3.0]"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "holds pairs (std1, std2)",
    );
    expect(
        &with("[1.0, 2.0]", "[]"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "must not be empty",
    );
    expect(
        &with("sigmas = [1.0, 2.0]", "sigmas = 1.0"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "must be a list of numbers",
    );
    expect(
        &with(", sigmas = [1.0, 2.0]", ""),
        ErrorKind::BadArgument,
        "test.snn:4:7",
        "`dog` needs the standard deviations",
    );
    expect(
        &with("log", "log").replace(
            "dog(x, size = 7, sigmas = [1.0, 2.0])",
            "log(x, size = 7, sigmas = [-1.0])",
        ),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "must be > 0",
    );
    expect(
        &with(
            "dog(x, size = 7, sigmas = [1.0, 2.0])",
            "gabor(x, size = 5, filters = [2.0, 45.0, 0.5, 8.0])",
        ),
        ErrorKind::BadValue,
        "test.snn:4:36",
        "five numbers per filter",
    );
    expect(
        &with(
            "sigmas = [1.0, 2.0]",
            "sigmas = [1.0, 2.0], pad = [3, 3, 3, 2]",
        ),
        ErrorKind::BadValue,
        "test.snn:4:51",
        "asymmetric filter padding",
    );
    expect(
        &with(
            "sigmas = [1.0, 2.0]",
            "sigmas = [1.0, 2.0], threshold = true",
        ),
        ErrorKind::BadValue,
        "test.snn:4:57",
        "`threshold` must be a number",
    );
    expect(
        &with("size = 7", "size = 15, pad = 1"),
        ErrorKind::Shape,
        "test.snn:4:3",
        "does not fit the 12x12 input",
    );
    // Filters read the image; coding reads a static map.
    expect(
        &with(
            "f = dog(x,",
            "g = dog(x, size = 3, sigmas = [1.0, 2.0])\n  f = dog(g,",
        ),
        ErrorKind::Shape,
        "test.snn:5:3",
        "filters a static image input, but `g` is not a model input",
    );
    expect(
        &with("input x: [1, 12, 12]", "input x: [T, 1, 12, 12]"),
        ErrorKind::Shape,
        "test.snn:4:3",
        "filters a static image input, but `x` is a sequence",
    );
    expect(
        "model m {\n  T = 4\n  input x: [T, 3]\n  s = latency(x)\n  output spikes(s)\n}\n",
        ErrorKind::Shape,
        "test.snn:4:3",
        "`latency` codes a static map into spike times, but `x` is a sequence",
    );
    expect(
        &with(
            "output spikes(s)",
            "output spikes(s)\n  train {\n    loss = first_spike(s)\n    input_grads = true\n  }",
        ),
        ErrorKind::Shape,
        "test.snn:4:3",
        "`dog` passes no gradient to `x`",
    );
    expect(
        &with("latency(f)", "latency(f, sort = 1)"),
        ErrorKind::BadValue,
        "test.snn:5:25",
        "`sort` must be true or false",
    );
}

/// Spyker's point-wise lateral inhibition (`inhibit`) and fire-once layer (`FireOnce`).
const INHIBIT: &str = "model m {\n  T = 6\n  input x: [T, 2, 8, 8]\n  c = conv2d(x, 4, kernel = 3, padding = 1, bias = false)\n  h = inhibit(c, threshold = 2.0)\n  n = FireOnce(h, v_threshold = 2.0)\n  output spikes(n)\n}\n";

#[test]
fn spyker_inhibition() {
    assert!(common::compile_str(INHIBIT).is_ok());
    let with = |from: &str, to: &str| INHIBIT.replace(from, to);
    expect(
        &with("input x: [T, 2, 8, 8]", "input x: [2, 8, 8]"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "`inhibit` compares potentials over time, but `c` is static",
    );
    expect(
        &with("inhibit(c,", "inhibit(flatten(c),"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "`inhibit` expects [channels, height, width] potentials, but `h.flatten` has shape [256]",
    );
    expect(
        &with("threshold = 2.0)\n  n", "threshold = true)\n  n"),
        ErrorKind::BadValue,
        "test.snn:5:30",
        "`threshold`",
    );
    expect(
        &with("inhibit(c, threshold = 2.0)", "inhibit(c, 2.0)"),
        ErrorKind::BadArgument,
        "test.snn:5:18",
        "too many arguments for `inhibit`",
    );
    expect(
        &with("inhibit(c, threshold = 2.0)", "inhibit(c, radius = 2)"),
        ErrorKind::UnknownName,
        "test.snn:5:18",
        "radius",
    );
    // In a recurrent cycle it would need its input's later steps before its first output.
    expect(
        &with(
            "h = inhibit(c, threshold = 2.0)\n  n = FireOnce(h,",
            "r = conv2d(n, 4, kernel = 3, padding = 1, delay = 1)\n  h = inhibit(r, threshold = 2.0)\n  n = FireOnce(c + h,",
        ),
        ErrorKind::BadArgument,
        "test.snn:6:3",
        "`inhibit` inside a recurrent cycle",
    );
    // No gradient through it: a trained conv behind it is refused, at the inhibition.
    let src = with(
        "output spikes(n)",
        "o = LIF(dense(flatten(n), 3))\n  output counts(o)\n  train { loss = cross_entropy(counts(o)) }",
    );
    assert!(common::compile_str(&src).is_ok());
    let mut c = Compiler::new(common::train_opts());
    let parsed = c.parse_str("test.snn", &src).unwrap();
    let d = c.compile(&parsed).unwrap_err();
    assert_eq!(d.kind, ErrorKind::BadArgument);
    assert_eq!(c.sources.location(d.span.unwrap()), "test.snn:5:3");
    assert!(
        d.message.contains("`inhibit` passes no gradient"),
        "{}",
        d.message
    );
    assert!(d.hint.is_some());
}

/// `test.snn:L:C` of the first `needle` in `src`.
fn loc_of(src: &str, needle: &str) -> String {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the source"));
    let line = src[..at].matches('\n').count() + 1;
    let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("test.snn:{line}:{col}")
}

/// Synapse models and plastic projections (issue 19): a rule that writes what it may not,
/// a rule on a projection it cannot attach to, wiring of the wrong shape: located errors.
#[test]
fn synapse_rules() {
    const PLASTIC: &str = "model m {\n  T = 4\n  input x: [T, 6]\n  h = dense(x, 3, bias = false, synapse = spyker_stdp())\n  n = FireOnce(h)\n  output spikes(n)\n}\n";
    let case = |from: &str, to: &str, kind: ErrorKind, at: &str, msg: &str| {
        let src = PLASTIC.replace(from, to);
        expect(&src, kind, &loc_of(&src, at), msg);
    };
    case(
        "spyker_stdp()",
        "stdpp()",
        ErrorKind::UnknownModel,
        "stdpp",
        "unknown synapse model `stdpp`",
    );
    case(
        "spyker_stdp()",
        "spyker_stdp",
        ErrorKind::BadValue,
        "spyker_stdp",
        "a rule is called",
    );
    case(
        "spyker_stdp()",
        "spyker_stdp(a_plus = x)",
        ErrorKind::BadValue,
        "x)",
        "parameter `a_plus` must be a number",
    );
    case(
        "spyker_stdp()",
        "spyker_stdp(stabilize = 1)",
        ErrorKind::BadValue,
        "1)",
        "flag `stabilize` must be true or false",
    );
    case(
        "spyker_stdp()",
        "rstdp()",
        ErrorKind::BadArgument,
        "rstdp()",
        "reads `reward`, but none is given",
    );
    case(
        "input x: [T, 6]",
        "input x: [6]",
        ErrorKind::BadArgument,
        "input x",
        "is the same at every step",
    );
    case(
        "synapse = spyker_stdp()",
        "post = n",
        ErrorKind::BadArgument,
        "n)",
        "`post` is an argument of a plastic projection",
    );
    case(
        "bias = false,",
        "bias = false, delay = 1,",
        ErrorKind::BadArgument,
        "h = dense",
        "has a delay",
    );
    case(
        "bias = false,",
        "bias = false, gate = g,",
        ErrorKind::UnknownName,
        "g,",
        "unknown name `g`",
    );
    let src = PLASTIC
        .replace("input x: [T, 6]", "input x: [T, 6]\n  input g: [2]")
        .replace("bias = false,", "bias = false, gate = g,");
    expect(
        &src,
        ErrorKind::Shape,
        &loc_of(&src, "input g"),
        "`gate = g` must be one static value per postsynaptic neuron",
    );
    let src = PLASTIC
        .replace("input x: [T, 6]", "input x: [T, 6]\n  input r: [3]")
        .replace("spyker_stdp()", "rstdp(), reward = r");
    expect(
        &src,
        ErrorKind::Shape,
        &loc_of(&src, "input r"),
        "one static value per sample",
    );
    let src = PLASTIC
        .replace("input x: [T, 6]", "input x: [T, 6]\n  input r: [1]")
        .replace("spyker_stdp()", "spyker_stdp(), reward = r");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "input r"),
        "does not read `reward`",
    );
    let src = PLASTIC.replace("  output", "  m2 = IF(h)\n  output");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "spyker_stdp()"),
        "drives 2 populations (`n`, `m2`)",
    );
    let src = PLASTIC.replace("  n = FireOnce(h)\n", "  n = FireOnce(dense(x, 3))\n");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "spyker_stdp()"),
        "drives no neuron population",
    );
    let src = PLASTIC
        .replace("input x: [T, 6]", "input x: [T, 6]\n  input y: [T, 4]")
        .replace("spyker_stdp()", "spyker_stdp(), post = y");
    expect(
        &src,
        ErrorKind::Shape,
        &loc_of(&src, "input y"),
        "`post = y` must be a sequence of 3 neurons",
    );
    case(
        "dense(x, 3, bias = false, synapse = spyker_stdp())",
        "maxpool2d(x, 2, synapse = spyker_stdp())",
        ErrorKind::UnknownName,
        "synapse",
        "synapse",
    );

    // Rules that write what they may not, or never write the weight.
    let rule = |body: &str| {
        format!(
            "synapse my_rule {{\n  param a = 0.1\n  on_post {{\n{body}\n  }}\n}}\n{}",
            PLASTIC.replace("spyker_stdp()", "my_rule()")
        )
    };
    let src = rule("    t_post = 1.0\n    w = w + a");
    expect(
        &src,
        ErrorKind::UnknownName,
        &loc_of(&src, "t_post ="),
        "cannot assign to `t_post`: it is read-only: `t_post` belongs to the postsynaptic side",
    );
    let src = rule("    t_pre = 1.0\n    w = w + a");
    expect(
        &src,
        ErrorKind::UnknownName,
        &loc_of(&src, "t_pre ="),
        "belongs to the presynaptic side",
    );
    let src = rule("    a = 1.0\n    w = w + a");
    expect(
        &src,
        ErrorKind::UnknownName,
        &loc_of(&src, "a = 1.0"),
        "cannot assign to `a`: it is a parameter",
    );
    let src = rule("    let d = a");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "on_post"),
        "never assigns the weight `w`",
    );
    let src = rule("    w = w + v");
    expect(
        &src,
        ErrorKind::UnknownName,
        &loc_of(&src, "v\n"),
        "unknown name `v` in synapse model `my_rule`",
    );
    let src = rule("    w' = a");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "w' = a"),
        "is an ODE",
    );
    let src = format!(
        "synapse my_rule {{\n  param a = 0.1\n}}\n{}",
        PLASTIC.replace("spyker_stdp()", "my_rule()")
    );
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "my_rule {"),
        "has no `on_post` block",
    );
    let src = format!("synapse LIF {{\n  on_post {{ w = w }}\n}}\n{PLASTIC}");
    expect(
        &src,
        ErrorKind::Duplicate,
        &loc_of(&src, "LIF"),
        "`LIF` is defined twice",
    );
    let src = format!(
        "synapse r {{\n  param T = 1.0\n  on_post {{ w = w }}\n}}\n{}",
        PLASTIC.replace("spyker_stdp()", "r()")
    );
    expect(
        &src,
        ErrorKind::Duplicate,
        &loc_of(&src, "T = 1.0"),
        "hides the rule's built-in `T`",
    );

    // Per-step rules: each block writes its own side; a trace reads only its own side.
    let traced = |blocks: &str| {
        format!(
            "synapse tr {{\n  param a = 0.1\n  pre x = 0.0\n  post y = 0.0\n{blocks}\n}}\n{}",
            PLASTIC.replace("spyker_stdp()", "tr()")
        )
    };
    let src = traced("  on_pre { y = y + 1.0\n w = w - a * y }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "y = y + 1.0"),
        "`on_pre` may not write the postsynaptic trace `y`",
    );
    let src = traced("  on_post { x = 2.0\n w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "x = 2.0"),
        "`on_post` may not write the presynaptic trace `x`",
    );
    let src = traced("  on_step { x = x + s_post }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "x = x + s_post"),
        "presynaptic trace `x` may not read the postsynaptic side",
    );
    let src = traced("  on_step { let both = x + y\n y = both }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "y = both"),
        "postsynaptic trace `y` may not read the presynaptic side",
    );
    let src = traced("  on_step { w = w * 0.5 }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "w = w * 0.5"),
        "`on_step` may not assign the weight `w`",
    );
    let src = traced("  on_post { w = w + a * select(t_pre <= t_post, 1.0, -1.0) }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "t_pre <="),
        "`t_pre` is a first-spike rule's",
    );
    let src = traced("  pre x = 1.0\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::Duplicate,
        &loc_of(&src, "x = 1.0"),
        "`x` is already a name of the rule",
    );

    let src = traced("  state e = 0.0\n  on_step { e = e + s_pre }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "e = e + s_pre"),
        "`on_step` may not assign the synapse state `e`",
    );
    let src = traced("  state e = 0.0\n  on_step { x = x + e }\n  on_post { w = w + a * x }");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "x = x + e"),
        "presynaptic trace `x` may not read the postsynaptic side",
    );

    // Shared weights (`weights = other`).
    let tied =
        |layer: &str| PLASTIC.replace("  output", &format!("  {layer}\n  m2 = IF(k)\n  output"));
    let src = tied("k = dense(x, 4, bias = false, weights = h)");
    expect(
        &src,
        ErrorKind::Shape,
        &loc_of(&src, "h)\n  m2"),
        "but its weight is [4, 6] and that one [3, 6]",
    );
    let src = tied("k = dense(x, 3, weights = h)");
    expect(
        &src,
        ErrorKind::Shape,
        &loc_of(&src, "h)\n  m2"),
        "with a bias",
    );
    let src = tied("k = dense(x, 3, bias = false, weights = n)");
    expect(
        &src,
        ErrorKind::BadArgument,
        &loc_of(&src, "n)\n  m2"),
        "can use the weight of another `dense` only",
    );
    let src = tied("k = dense(x, 3, bias = false, weights = hh)");
    expect(
        &src,
        ErrorKind::UnknownName,
        &loc_of(&src, "hh"),
        "unknown name `hh`",
    );
    let src = tied("k = dense(x, 3, bias = false, weights = 2)");
    expect(
        &src,
        ErrorKind::BadValue,
        &loc_of(&src, "2)\n  m2"),
        "`weights` names another projection",
    );
}

/// Spyker's k-WTA (`wta`) and "infinite threshold" (`infinite`).
const WTA: &str = "model m {\n  T = 6\n  input x: [T, 2, 8, 8]\n  c = conv2d(x, 4, kernel = 3, padding = 1, bias = false)\n  w = wta(c, k = 2, radius = 1)\n  n = FireOnce(w)\n  output spikes(n)\n}\n";

#[test]
fn spyker_wta_and_infinite() {
    assert!(common::compile_str(WTA).is_ok());
    let with = |from: &str, to: &str| WTA.replace(from, to);
    // A vector of neurons is N maps of one pixel; the radius square must fit the map.
    assert!(common::compile_str(
        &with("wta(c,", "wta(flatten(c),").replace("radius = 1", "radius = 0")
    )
    .is_ok());
    assert!(common::compile_str(&with("radius = 1", "radius = 3")).is_ok());
    expect(
        &with("radius = 1", "radius = 4"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "`wta` radius 4 inhibits a 9x9 square, larger than `c`'s 8x8 maps",
    );
    expect(
        &with("wta(c,", "wta(flatten(c),"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "larger than `w.flatten`'s 1x1 maps",
    );
    expect(
        &with("input x: [T, 2, 8, 8]", "input x: [2, 8, 8]"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "`wta` ranks neurons by their first step above the threshold, but `c` is static",
    );
    expect(
        "model m {\n  T = 6\n  input x: [T, 4, 8]\n  w = wta(x)\n  n = FireOnce(w)\n  output spikes(n)\n}\n",
        ErrorKind::Shape,
        "test.snn:4:3",
        "`wta` expects [channels, height, width] maps or [neurons], but `x` has shape [4, 8]",
    );
    expect(
        &with("k = 2", "k = 0"),
        ErrorKind::BadValue,
        "test.snn:5:18",
        "`k`",
    );
    expect(
        &with("radius = 1", "radius = -1"),
        ErrorKind::BadValue,
        "test.snn:5:30",
        "`radius`",
    );
    expect(
        &with("radius = 1)", "radius = 1, sort = true)"),
        ErrorKind::UnknownName,
        "test.snn:5:33",
        "sort",
    );
    // Like `inhibit`, it needs all T steps of its input: not in a recurrent cycle.
    expect(
        &with(
            "w = wta(c, k = 2, radius = 1)\n  n = FireOnce(w)",
            "r = conv2d(n, 4, kernel = 3, padding = 1, delay = 1)\n  w = wta(r, k = 2, radius = 1)\n  n = FireOnce(c + w)",
        ),
        ErrorKind::BadArgument,
        "test.snn:6:3",
        "`wta` inside a recurrent cycle",
    );
    // No gradient through either op: a trained conv behind it is refused, at the op.
    for (from, to, op) in [
        (
            "wta(c, k = 2, radius = 1)",
            "wta(c, k = 2, radius = 1)",
            "wta",
        ),
        ("wta(c, k = 2, radius = 1)", "infinite(c)", "infinite"),
    ] {
        let src = with(from, to).replace(
            "output spikes(n)",
            "o = LIF(dense(flatten(n), 3))\n  output counts(o)\n  train { loss = cross_entropy(counts(o)) }",
        );
        assert!(common::compile_str(&src).is_ok());
        let mut c = Compiler::new(common::train_opts());
        let parsed = c.parse_str("test.snn", &src).unwrap();
        let d = c.compile(&parsed).unwrap_err();
        assert_eq!(d.kind, ErrorKind::BadArgument);
        assert_eq!(c.sources.location(d.span.unwrap()), "test.snn:5:3");
        let msg = format!("`{op}` passes no gradient");
        assert!(d.message.contains(&msg), "{}", d.message);
        assert!(d.hint.is_some());
    }
    expect(
        &with("input x: [T, 2, 8, 8]", "input x: [2, 8, 8]")
            .replace("wta(c, k = 2, radius = 1)", "infinite(c)"),
        ErrorKind::Shape,
        "test.snn:5:3",
        "`infinite` keeps the last of `T` steps, but `c` is static",
    );
    expect(
        &with("wta(c, k = 2, radius = 1)", "infinite(c, value = true)"),
        ErrorKind::BadValue,
        "test.snn:5:27",
        "`value`",
    );
}

/// Pool padding per side: `[vertical, horizontal]` or `[top, left, bottom, right]`.
#[test]
fn pool_padding_per_side() {
    let src = |pool: &str| {
        format!("model m {{\n  T = 4\n  input x: [T, 2, 9, 9]\n  p = {pool}\n  n = FireOnce(p)\n  output spikes(n)\n}}\n")
    };
    for ok in [
        "maxpool2d(x, 3, stride = 2, padding = [0, 2])",
        "maxpool2d(x, 2, padding = [1, 0, 0, 1])",
        "avgpool2d(x, 2, padding = [1, 0, 0, 1])",
    ] {
        assert!(common::compile_str(&src(ok)).is_ok(), "{ok}");
    }
    expect(
        &src("maxpool2d(x, 2, padding = [1, 0, 1])"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "`padding` must be a size >= 0, a pair `[vertical, horizontal]` or four sizes `[top, left, bottom, right]`",
    );
    expect(
        &src("maxpool2d(x, 2, padding = [1, -1])"),
        ErrorKind::BadValue,
        "test.snn:4:33",
        "`padding` must be",
    );
    expect(
        &src("avgpool2d(x, 3, padding = [0, 3])"),
        ErrorKind::Shape,
        "test.snn:4:3",
        "pool padding 3 of [0, 3, 0, 3] is not smaller than the window 3",
    );
    // The same padding on every side keeps the rule of one number.
    expect(
        &src("maxpool2d(x, 3, padding = [2, 2])"),
        ErrorKind::Shape,
        "test.snn:4:3",
        "pool padding 2 is more than half the window 3",
    );
}

/// `sparse = wave` is for a `conv2d` that reads its whole input sequence at once.
#[test]
fn sparse_wave_misuse() {
    expect(
        "model m {\n  T = 4\n  input x: [T, 6]\n  h = dense(x, 3, sparse = wave)\n  s = LIF(h)\n  output spikes(s)\n}\n",
        ErrorKind::BadArgument,
        "test.snn:4:3",
        "`sparse = wave` is for `conv2d` only",
    );
    expect(
        "model m {\n  T = 4\n  input x: [T, 2, 6, 6]\n  c = conv2d(x, 3, delay = 1, sparse = wave)\n  s = LIF(c)\n  output spikes(s)\n}\n",
        ErrorKind::BadArgument,
        "test.snn:4:3",
        "`sparse = wave` needs the whole sequence at once",
    );
    expect(
        "model m {\n  T = 4\n  input x: [T, 2, 6, 6]\n  c = conv2d(x, 3, sparse = waves)\n  s = LIF(c)\n  output spikes(s)\n}\n",
        ErrorKind::BadValue,
        "test.snn:4:29",
        "`sparse` must be `auto`, `on`, `off` or `wave`",
    );
}
