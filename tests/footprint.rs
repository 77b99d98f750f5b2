//! Issue 18: the memory estimate (`snn_runtime::exec::Footprint`, what `snnc check`
//! reports and the budget is checked against) is close to what a run really holds: the
//! resident memory a session gains over a run, measured from `/proc/self/status`, is within
//! a factor of 2 of the estimate. Alone in its test binary so no other test's allocations
//! blur the measurement.

mod common;

use snn_runtime::exec::footprint::PartKind;

/// `VmRSS` in bytes (Linux), or `None` where it cannot be read.
fn resident() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn estimate_is_within_a_factor_of_two_of_what_a_run_holds() {
    let Some(_) = resident() else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    let text = std::fs::read_to_string(common::root().join("examples/mlp.snn")).unwrap();
    let program = common::compile_str(&text).unwrap();
    let mut s = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    // Large enough that the slots dwarf allocator and thread-pool noise (~60 MB).
    let (t, batch) = (25, 256);
    let fp = s.footprint(t, batch);
    // The weights are already allocated; the run adds the rest.
    let run_bytes: u64 = (fp.parts.iter())
        .filter(|p| p.kind != PartKind::Weight)
        .map(|p| p.bytes)
        .sum();
    let slots: u64 = s
        .slot_sizes(t, batch)
        .unwrap()
        .iter()
        .map(|&n| n as u64 * 4)
        .sum();
    assert_eq!(
        slots,
        (fp.parts.iter())
            .filter(|p| p.kind == PartKind::Slot)
            .map(|p| p.bytes)
            .sum::<u64>(),
        "the estimate's slots are the session's"
    );
    let before = resident().unwrap();
    let x = s.random_inputs(t, batch, 1);
    let outs = s.run(&x, t, batch).unwrap();
    let gained = resident().unwrap().saturating_sub(before);
    let ratio = gained as f64 / run_bytes as f64;
    println!(
        "estimate {run_bytes} B for the run ({} B in all), resident memory gained {gained} B: ratio {ratio:.2}",
        fp.total
    );
    assert!((0.5..=2.0).contains(&ratio), "ratio {ratio:.2}");
    drop((x, outs));
}
