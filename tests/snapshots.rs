//! Snapshot tests (naga's convention): for every model in examples/ and tests/in/, the IR
//! after every pass, the generated Rust and the generated CUDA are pinned under
//! tests/out/{ir,rust,cuda}/.
//! Review changes with `cargo insta review` (or INSTA_UPDATE=always to accept).

mod common;

use snnc::{passes, Compiler, Options};

#[test]
fn ir_after_every_pass_and_generated_rust() {
    for path in common::model_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut c = Compiler::new(Options::default());
        let parsed = c
            .parse_file(&path)
            .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
        // `autodiff` only acts when compiling for training (see `training_plans`);
        // `synapses` only where a projection learns by a rule (the dump is `neurons`' else).
        let plastic = !c
            .module_until(&parsed, "resolve")
            .unwrap()
            .plastic
            .is_empty();
        let pinned = |p: &str| p != "autodiff" && (p != "synapses" || plastic);
        for (pass, _) in passes::PASSES.iter().filter(|(p, _)| pinned(p)) {
            let text = c
                .dump_after(&parsed, pass)
                .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
            insta::with_settings!({
                snapshot_path => "out/ir",
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => format!("{name}.snn after `{pass}`"),
            }, {
                insta::assert_snapshot!(format!("{name}.{pass}"), text);
            });
        }
        let rust = c.dump_after(&parsed, "rust").unwrap();
        insta::with_settings!({
            snapshot_path => "out/rust",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{name}.snn generated Rust"),
        }, {
            insta::assert_snapshot!(name.clone(), rust);
        });
        let cuda = snnc::back::cuda::print_program(&c.compile(&parsed).unwrap());
        insta::with_settings!({
            snapshot_path => "out/cuda",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{name}.snn generated CUDA"),
        }, {
            insta::assert_snapshot!(name.clone(), cuda);
        });
    }
}

/// The unfused and step-by-step plans are pinned too for one recurrent and one
/// feed-forward model, so changes to those lowering paths show in review.
#[test]
fn alternative_plans() {
    for file in ["examples/recurrent.snn", "tests/in/delay_feedforward.snn"] {
        let path = common::root().join(file);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (tag, opts) in [
            (
                "unfused",
                Options {
                    fuse: false,
                    ..Options::default()
                },
            ),
            (
                "steps",
                Options {
                    force_steps: true,
                    ..Options::default()
                },
            ),
        ] {
            let mut c = Compiler::new(opts);
            let parsed = c.parse_file(&path).unwrap();
            let text = c.dump_after(&parsed, "lower").unwrap();
            insta::with_settings!({
                snapshot_path => "out/ir",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(format!("{name}.lower.{tag}"), text);
            });
        }
    }
}

/// Training plans (tests/in/train/ and three examples): the derived backward step of every population, the
/// lowered plan with its backward ops and kernels, and the generated Rust and CUDA.
#[test]
fn training_plans() {
    let mut files = common::snn_files("tests/in/train");
    files.push(common::root().join("examples/yinyang.snn"));
    files.push(common::root().join("examples/mnist.snn"));
    files.push(common::root().join("examples/smnist_psn.snn"));
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut c = Compiler::new(Options {
            train: true,
            ..Options::default()
        });
        let parsed = c
            .parse_file(&path)
            .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
        for (pass, dir) in [
            ("autodiff", "out/ir"),
            ("lower", "out/ir"),
            ("rust", "out/rust"),
        ] {
            let text = c
                .dump_after(&parsed, pass)
                .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
            insta::with_settings!({
                snapshot_path => dir,
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => format!("{name}.snn compiled for training, after `{pass}`"),
            }, {
                insta::assert_snapshot!(format!("{name}.train.{pass}"), text);
            });
        }
        let cuda = snnc::back::cuda::print_program(&c.compile(&parsed).unwrap());
        insta::with_settings!({
            snapshot_path => "out/cuda",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{name}.snn compiled for training, generated CUDA"),
        }, {
            insta::assert_snapshot!(format!("{name}.train"), cuda);
        });
    }
}

/// The time-axis decision of every resetless model and of the PSN family (parallel or
/// sequential, the reason, the estimated FLOPs, bytes and time of both) at the peer
/// benchmark's sizes (`shared/peers/psn_vs_lif.py`: B = 32, N = 4096) for several T, plus a
/// population with a reset and one in a recurrent cycle.
#[test]
fn schedule_decisions() {
    let pops = [
        ("lif_none", "LIF(h, reset = none)"),
        ("lif_hard", "LIF(h)"),
        ("li", "LI(h, tau = 4.0)"),
        ("if_none", "IF(h, reset = none)"),
        ("leaky_none", "Leaky(h, reset_mechanism = none)"),
        ("cuba", "CUBALIF(h)"),
        ("psn", "PSN(h)"),
        ("masked", "MaskedPSN(h, k = 4, lambda = 1.0)"),
        ("sliding", "SlidingPSN(h, k = 4)"),
        (
            "cycle",
            "LIF(dense(x, 4096) + dense(cycle, 4096, delay = 1), reset = none)",
        ),
    ];
    for t in [8, 32, 128] {
        let mut src = format!("model decisions {{\n  T = {t}\n  batch = 32\n  input x: [T, 16]\n  h = dense(x, 4096)\n");
        for (name, pop) in pops {
            src.push_str(&format!(
                "  {name} = {pop}\n  output trace({name}.{})\n",
                if name.starts_with("leaky") {
                    "mem"
                } else if name.contains("psn") || name == "masked" || name == "sliding" {
                    "h"
                } else {
                    "v"
                }
            ));
        }
        src.push_str("}\n");
        let mut c = Compiler::new(Options::default());
        let parsed = c
            .parse_str("decisions.snn", &src)
            .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
        let text = c
            .dump_after(&parsed, "schedule")
            .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
        let section = &text[text.find("\ntime axis (").expect("the decisions") + 1..];
        insta::with_settings!({
            snapshot_path => "out/ir",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("time-axis decisions at T = {t}, B = 32, N = 4096"),
        }, {
            insta::assert_snapshot!(format!("schedule_decisions.T{t}"), section);
        });
    }
}
