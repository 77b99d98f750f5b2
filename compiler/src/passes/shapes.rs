//! Pass `shapes`: infer every node's per-sample dims and whether it changes over time
//! (`Seq`) or not (`Static`), and check that connected nodes agree.

use crate::diag::{DResult, Diagnostic, ErrorKind, Span};
use crate::ir::net::*;

pub fn run(m: &mut Module) -> DResult<()> {
    let mut state = vec![Visit::New; m.nodes.len()];
    for h in m.nodes.handles() {
        if infer(m, h, &mut state)?.is_none() {
            return Err(cycle_err(m, h));
        }
    }
    // Checks that a recurrent cycle may have postponed until every shape was known.
    for h in m.nodes.handles() {
        match m.nodes[h].kind.clone() {
            NodeKind::Dense { src, out, .. } => {
                check_dense_src(m, h, src)?;
                let weight = [out, m.shape(src).features()];
                check_count(m, h, &weight, "its weight")?;
            }
            NodeKind::Population { inputs, .. } => check_sum(m, h, &inputs)?,
            _ => {}
        }
    }
    for &(h, owner, span) in &m.ties {
        check_tie(m, h, owner, span)?;
    }
    Ok(())
}

/// The shape of a projection's weight (and whether it has a bias).
fn weight_shape(m: &Module, h: NodeId) -> (Vec<usize>, bool) {
    match m.nodes[h].kind {
        NodeKind::Dense { src, out, bias, .. } => (vec![out, m.shape(src).features()], bias),
        NodeKind::Conv2d {
            src,
            out_channels,
            kernel,
            bias,
            ..
        } => (
            vec![out_channels, m.shape(src).dims[0], kernel[0], kernel[1]],
            bias,
        ),
        _ => unreachable!("resolve ties projections only"),
    }
}

/// `weights = owner`: the same weight shape and the same bias flag.
fn check_tie(m: &Module, h: NodeId, owner: NodeId, span: Span) -> DResult<()> {
    let (mine, bias) = weight_shape(m, h);
    let (theirs, their_bias) = weight_shape(m, owner);
    if mine != theirs || bias != their_bias {
        return Err(Diagnostic::new(
            ErrorKind::Shape,
            format!(
                "`{}` would use the weight of `{}`, but its weight is {:?}{} and that one {:?}{}",
                m.nodes[h].name,
                m.nodes[owner].name,
                mine,
                if bias { " with a bias" } else { "" },
                theirs,
                if their_bias { " with a bias" } else { "" },
            ),
        )
        .at(span, "a weight of another shape")
        .note(m.nodes[owner].span, "the weight's owner")
        .hint(
            "shared weights need the same input channels or features, outputs, kernel and `bias`",
        ));
    }
    Ok(())
}

/// An element count past 64 bits is refused here, where it is first known, so that no later
/// pass or the runtime ever multiplies it out; anything smaller is left to the memory
/// budget (`snnc::footprint`), which sizes the whole model for the run's T and batch.
fn check_count(m: &Module, h: NodeId, dims: &[usize], what: &str) -> DResult<()> {
    if dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .is_some()
    {
        return Ok(());
    }
    Err(Diagnostic::new(
        ErrorKind::Memory,
        format!(
            "`{}` is too large: {what} has {} elements, more than 64 bits count (the model needs more than 18.4 EB)",
            m.nodes[h].name,
            dims.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" x ")
        ),
    )
    .at(m.nodes[h].span, "too large")
    .hint("shrink the layer"))
}

fn cycle_err(m: &Module, h: NodeId) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Cycle,
        format!("the shape of `{}` depends on itself", m.nodes[h].name),
    )
    .at(m.nodes[h].span, "part of a cycle")
    .hint("a recurrent loop must pass through a projection, and its population needs an input whose shape is known (put the feed-forward term first)")
}

fn check_dense_src(m: &Module, h: NodeId, src: NodeId) -> DResult<()> {
    let s = m.shape(src);
    if s.dims.len() != 1 {
        return Err(shape_err(
            format!(
                "dense expects a vector input, but `{}` has shape {}",
                m.nodes[src].name,
                dims_str(&s.dims)
            ),
            m,
            h,
            "input is not 1-D",
            &format!(
                "insert `flatten({})` before the dense layer",
                m.nodes[src].name
            ),
        ));
    }
    Ok(())
}

fn check_sum(m: &Module, h: NodeId, inputs: &[NodeId]) -> DResult<()> {
    let first = m.shape(inputs[0]).dims.clone();
    for &i in &inputs[1..] {
        let s = m.shape(i);
        if s.dims != first {
            return Err(Diagnostic::new(
                ErrorKind::Shape,
                format!(
                    "the currents summed into `{}` differ in shape: `{}` is {} but `{}` is {}",
                    m.nodes[h].name,
                    m.nodes[inputs[0]].name,
                    dims_str(&first),
                    m.nodes[i].name,
                    dims_str(&s.dims)
                ),
            )
            .at(m.nodes[i].span, format!("shape {}", dims_str(&s.dims)))
            .note(
                m.nodes[inputs[0]].span,
                format!("shape {}", dims_str(&first)),
            )
            .hint("every term of a sum must have the population's shape"));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Visit {
    New,
    Busy,
    Done,
}

fn shape_err(msg: String, m: &Module, h: NodeId, label: &str, hint: &str) -> Diagnostic {
    Diagnostic::new(ErrorKind::Shape, msg)
        .at(m.nodes[h].span, label)
        .hint(hint)
}

fn dims_str(d: &[usize]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The shape of `h`, or `None` while it is being inferred further up the stack (a cycle:
/// the caller decides whether it can do without).
fn infer(m: &mut Module, h: NodeId, state: &mut Vec<Visit>) -> DResult<Option<Shape>> {
    match state[h.index()] {
        Visit::Done => return Ok(Some(m.shape(h).clone())),
        Visit::Busy => return Ok(None),
        Visit::New => {}
    }
    state[h.index()] = Visit::Busy;
    let kind = m.nodes[h].kind.clone();
    let shape = match kind {
        NodeKind::Input { dims, time_varying } => Shape {
            extent: if time_varying {
                Extent::Seq
            } else {
                Extent::Static
            },
            dims,
        },
        NodeKind::Encode { src, .. } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            Shape {
                extent: Extent::Seq,
                dims: s.dims,
            }
        }
        NodeKind::Dense {
            src, out, delay, ..
        } => {
            // The output size is known without the source: that is what lets a recurrent
            // loop through a projection be shaped. Inside a cycle the source is a per-step
            // value; `run` checks it is 1-D once every shape is known.
            state[h.index()] = Visit::Done;
            m.nodes[h].shape = Some(Shape {
                extent: Extent::Seq,
                dims: vec![out],
            });
            let extent = match infer(m, src, state)? {
                None => Extent::Seq,
                Some(s) => {
                    check_dense_src(m, h, src)?;
                    if delay > 0 && s.extent == Extent::Static {
                        return Err(delay_static(m, h, src));
                    }
                    s.extent
                }
            };
            Shape {
                extent,
                dims: vec![out],
            }
        }
        NodeKind::Conv2d {
            src,
            out_channels,
            kernel,
            stride,
            padding,
            delay,
            ..
        } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            let [c, hh, ww] = s.dims[..] else {
                return Err(shape_err(
                    format!(
                        "conv2d expects a [channels, height, width] input, but `{}` has shape {}",
                        m.nodes[src].name,
                        dims_str(&s.dims)
                    ),
                    m,
                    h,
                    "input is not 3-D",
                    "declare image inputs as `input x: [1, 28, 28]`",
                ));
            };
            check_count(m, h, &[out_channels, c, kernel[0], kernel[1]], "its weight")?;
            let (ho, wo) = window_out(hh, ww, kernel, stride, padding).ok_or_else(|| {
                shape_err(
                    format!(
                        "conv2d kernel {}x{} (padding {padding}) does not fit the {hh}x{ww} input",
                        kernel[0], kernel[1]
                    ),
                    m,
                    h,
                    "kernel larger than input",
                    "use a smaller kernel or more padding",
                )
            })?;
            if delay > 0 && s.extent == Extent::Static {
                return Err(delay_static(m, h, src));
            }
            Shape {
                extent: s.extent,
                dims: vec![out_channels, ho, wo],
            }
        }
        NodeKind::Pool2d {
            src,
            kernel,
            stride,
            padding,
            ..
        } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            let [c, hh, ww] = s.dims[..] else {
                return Err(shape_err(
                    format!(
                        "pooling expects a [channels, height, width] input, but `{}` has shape {}",
                        m.nodes[src].name,
                        dims_str(&s.dims)
                    ),
                    m,
                    h,
                    "input is not 3-D",
                    "pool before flatten",
                ));
            };
            let [top, left, bottom, right] = padding;
            if padding.iter().all(|&p| p == top) {
                if top * 2 > kernel {
                    return Err(shape_err(
                        format!("pool padding {top} is more than half the window {kernel}"),
                        m,
                        h,
                        "padding too large",
                        "padding must be at most kernel / 2",
                    ));
                }
            } else if let Some(&p) = padding.iter().find(|&&p| p >= kernel) {
                // Sides differ (Spyker's (0, 2) with a window of 3): no window may be all padding.
                return Err(shape_err(
                    format!(
                        "pool padding {p} of [{top}, {left}, {bottom}, {right}] is not smaller than the window {kernel}"
                    ),
                    m,
                    h,
                    "padding too large",
                    "every side's padding must be smaller than the window, else a window holds padding only",
                ));
            }
            let side = |n: usize, a: usize, b: usize| {
                let np = n.checked_add(a)?.checked_add(b)?;
                (np >= kernel).then(|| (np - kernel) / stride + 1)
            };
            let (ho, wo) = side(hh, top, bottom)
                .zip(side(ww, left, right))
                .ok_or_else(|| {
                    shape_err(
                        format!("pool window {kernel} does not fit the {hh}x{ww} input"),
                        m,
                        h,
                        "window larger than input",
                        "use a smaller window",
                    )
                })?;
            Shape {
                extent: s.extent,
                dims: vec![c, ho, wo],
            }
        }
        NodeKind::Filter {
            src,
            bank,
            size,
            pad,
            ..
        } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            let what = bank.op_name();
            // Spyker filters the grey image once, and the filter passes no gradient: it
            // reads a model input.
            if !matches!(m.nodes[src].kind, NodeKind::Input { .. }) || s.extent != Extent::Static {
                return Err(shape_err(
                    format!(
                        "`{what}` filters a static image input, but `{}` is {}",
                        m.nodes[src].name,
                        if s.extent == Extent::Seq {
                            "a sequence"
                        } else {
                            "not a model input"
                        }
                    ),
                    m,
                    h,
                    "not a static image input",
                    "apply the filter to an input declared `input x: [1, 28, 28]`",
                ));
            }
            if m.train.as_ref().is_some_and(|t| t.input_grads) {
                return Err(shape_err(
                    format!("`{what}` passes no gradient to `{}`, but the model sets `input_grads = true`", m.nodes[src].name),
                    m,
                    h,
                    "a frozen filter of the input",
                    "filters are frozen and not differentiated: drop `input_grads = true`",
                ));
            }
            let [c, hh, ww] = s.dims[..] else {
                return Err(shape_err(
                    format!(
                        "`{what}` expects a [channels, height, width] input, but `{}` has shape {}",
                        m.nodes[src].name,
                        dims_str(&s.dims)
                    ),
                    m,
                    h,
                    "input is not 3-D",
                    "declare image inputs as `input x: [1, 28, 28]`",
                ));
            };
            let raw = bank.step().raw_channels(bank.len());
            check_count(m, h, &[c, raw, c, size, size], "its kernel")?;
            let (ho, wo) = window_out(hh, ww, [size, size], 1, pad).ok_or_else(|| {
                shape_err(
                    format!("`{what}` window {size}x{size} (pad {pad}) does not fit the {hh}x{ww} input"),
                    m,
                    h,
                    "window larger than input",
                    "use a smaller `size` or more `pad`",
                )
            })?;
            Shape {
                extent: Extent::Static,
                dims: vec![c * bank.step().out_channels(bank.len()), ho, wo],
            }
        }
        NodeKind::Latency { src, .. } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            if s.extent != Extent::Static {
                return Err(shape_err(
                    format!(
                        "`latency` codes a static map into spike times, but `{}` is a sequence",
                        m.nodes[src].name
                    ),
                    m,
                    h,
                    "time-varying input",
                    "code a static input or a filter's output, e.g. `latency(dog(x, ..))`",
                ));
            }
            Shape {
                extent: Extent::Seq,
                dims: s.dims,
            }
        }
        NodeKind::Inhibit { src, .. } => {
            let s = infer(m, src, state)?.ok_or_else(|| {
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    "`inhibit` inside a recurrent cycle: it reads all T steps of its input at once",
                )
                .at(m.nodes[h].span, "in a recurrent cycle")
                .hint("inhibit a feed-forward layer's output")
            })?;
            // The winner of a pixel is decided over all T steps at once, across channels.
            if s.extent != Extent::Seq {
                return Err(shape_err(
                    format!(
                        "`inhibit` compares potentials over time, but `{}` is static",
                        m.nodes[src].name
                    ),
                    m,
                    h,
                    "static input",
                    "inhibit a layer's per-step output, e.g. `inhibit(conv2d(s, 8, 5), threshold = 10.0)` of a spike wave `s`",
                ));
            }
            if s.dims.len() != 3 {
                return Err(shape_err(
                    format!(
                        "`inhibit` expects [channels, height, width] potentials, but `{}` has shape {}",
                        m.nodes[src].name,
                        dims_str(&s.dims)
                    ),
                    m,
                    h,
                    "not a [C, H, W] map",
                    "inhibit the output of a `conv2d` (channels compete per pixel)",
                ));
            }
            s
        }
        NodeKind::Wta { src, radius, .. } => {
            let s = infer(m, src, state)?.ok_or_else(|| whole_run_in_cycle(m, h))?;
            // The winners are decided over all T steps at once: one static map per sample.
            if s.extent != Extent::Seq {
                return Err(shape_err(
                    format!(
                        "`wta` ranks neurons by their first step above the threshold, but `{}` is static",
                        m.nodes[src].name
                    ),
                    m,
                    h,
                    "static input",
                    "take the winners of a layer's per-step output, e.g. `wta(inhibit(conv2d(s, 8, 5)), k = 5, radius = 2)` of a spike wave `s`",
                ));
            }
            let (hh, ww) = match s.dims[..] {
                [_, hh, ww] => (hh, ww),
                [_] => (1, 1),
                _ => {
                    return Err(shape_err(
                        format!(
                            "`wta` expects [channels, height, width] maps or [neurons], but `{}` has shape {}",
                            m.nodes[src].name,
                            dims_str(&s.dims)
                        ),
                        m,
                        h,
                        "not a [C, H, W] map or a vector",
                        "take the winners of a `conv2d` layer's maps (or of a vector of neurons)",
                    ))
                }
            };
            if radius.saturating_mul(2).saturating_add(1) > hh.max(ww) {
                return Err(shape_err(
                    format!(
                        "`wta` radius {radius} inhibits a {0}x{0} square, larger than `{1}`'s {hh}x{ww} maps",
                        radius.saturating_mul(2).saturating_add(1),
                        m.nodes[src].name
                    ),
                    m,
                    h,
                    "radius larger than the map",
                    &format!(
                        "use a radius of at most {} (2 * radius + 1 <= {})",
                        (hh.max(ww) - 1) / 2,
                        hh.max(ww)
                    ),
                ));
            }
            Shape {
                extent: Extent::Static,
                dims: s.dims,
            }
        }
        NodeKind::Infinite { src, .. } => {
            let s = infer(m, src, state)?.ok_or_else(|| whole_run_in_cycle(m, h))?;
            if s.extent != Extent::Seq {
                return Err(shape_err(
                    format!(
                        "`infinite` keeps the last of `T` steps, but `{}` is static",
                        m.nodes[src].name
                    ),
                    m,
                    h,
                    "static input",
                    "apply it to a layer's per-step potentials, e.g. `infinite(conv2d(s, 20, 3))`",
                ));
            }
            s
        }
        NodeKind::Flatten { src } => {
            let s = infer(m, src, state)?.ok_or_else(|| cycle_err(m, h))?;
            Shape {
                extent: s.extent,
                dims: vec![s.features()],
            }
        }
        NodeKind::Population { inputs, .. } => {
            // The first input whose shape is known fixes the population's shape; the others
            // (e.g. a recurrent projection of this population) are shaped after it and
            // checked against it in `run`.
            let mut shape = None;
            for &i in &inputs {
                if let Some(s) = infer(m, i, state)? {
                    if shape.is_none() {
                        let sh = Shape {
                            extent: Extent::Seq,
                            dims: s.dims,
                        };
                        m.nodes[h].shape = Some(sh.clone());
                        state[h.index()] = Visit::Done;
                        shape = Some(sh);
                    }
                }
            }
            match shape {
                Some(s) => s,
                None => return Ok(None),
            }
        }
    };
    check_count(m, h, &shape.dims, "each sample")?;
    m.nodes[h].shape = Some(shape.clone());
    state[h.index()] = Visit::Done;
    Ok(Some(shape))
}

/// `wta` or `infinite` on its own recurrent cycle: it needs every step of its input before
/// its first output (as `inhibit`).
fn whole_run_in_cycle(m: &Module, h: NodeId) -> Diagnostic {
    let op = m.nodes[h].kind.op_name();
    Diagnostic::new(
        ErrorKind::BadArgument,
        format!("`{op}` inside a recurrent cycle: it reads all T steps of its input at once"),
    )
    .at(m.nodes[h].span, "in a recurrent cycle")
    .hint(format!("apply `{op}` to a feed-forward layer's output"))
}

fn delay_static(m: &Module, h: NodeId, src: NodeId) -> Diagnostic {
    shape_err(
        format!("`{}` delays `{}`, which is the same at every step", m.nodes[h].name, m.nodes[src].name),
        m,
        h,
        "delay of a static value",
        "delays apply to values that change over time (spikes, time-varying inputs); remove `delay`",
    )
}

/// Output size of a sliding window, or `None` if it does not fit.
pub fn window_out(
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: usize,
    pad: usize,
) -> Option<(usize, usize)> {
    let hp = pad.checked_mul(2)?.checked_add(h)?;
    let wp = pad.checked_mul(2)?.checked_add(w)?;
    if k[0] > hp || k[1] > wp {
        return None;
    }
    Some(((hp - k[0]) / stride + 1, (wp - k[1]) / stride + 1))
}
