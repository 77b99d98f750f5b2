//! The interpreter: walks a validated plan's ops on a device. Control ops (zero, launch, step
//! loops) are handled here; every library op runs itself ([`crate::op::LibraryOp::run`]) through a
//! [`Runner`], which resolves time selections into row blocks ([`Runner::blocks`]).

use super::validate::ValidPlan;
use crate::device::{Device, GroupDesc, LaunchDesc, Loc};
use crate::error::{Result, RuntimeError};
use crate::plan::*;
use std::cell::RefCell;

/// Element count of a buffer at `(t, batch)`, or an error when it overflows.
pub(crate) fn buffer_len(b: &BufferDecl, t: usize, batch: usize) -> Result<usize> {
    let rows = match b.extent {
        Extent::Seq => t.checked_mul(batch),
        Extent::Static | Extent::Single => Some(batch),
    };
    rows.and_then(|r| r.checked_mul(b.features)).ok_or_else(|| {
        RuntimeError::InvalidArgument(format!(
            "buffer `{}` is too large for t = {t}, batch = {batch}",
            b.name
        ))
    })
}

/// Rows an op touches: `count` blocks of `rows` rows; block `i` reads at element offset
/// `x0 + i * xs` and writes at `y0 + i * ys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub count: usize,
    pub rows: usize,
    pub x0: usize,
    pub xs: usize,
    pub y0: usize,
    pub ys: usize,
}

/// Resolves a time selection for source `x` and destination `y` (validated extents).
/// `None`: nothing to do.
pub(crate) fn span(
    time: TimeSel,
    x: &BufferDecl,
    y: &BufferDecl,
    t_len: usize,
    b: usize,
    step: Option<usize>,
) -> Option<Span> {
    let xrow = b * x.features;
    let yrow = b * y.features;
    let xseq = x.extent == Extent::Seq;
    let yseq = y.extent == Extent::Seq;
    let one = |x0, y0| Span {
        count: 1,
        rows: b,
        x0,
        xs: 0,
        y0,
        ys: 0,
    };
    match time {
        TimeSel::All { delay } => {
            if yseq && delay >= t_len {
                return None;
            }
            match (xseq, yseq) {
                (true, true) => Some(Span {
                    rows: (t_len - delay) * b,
                    ..one(0, delay * yrow)
                }),
                (false, true) => Some(Span {
                    count: t_len - delay,
                    ys: yrow,
                    ..one(0, delay * yrow)
                }),
                // Validated: delay 0, no Seq -> non-Seq.
                _ => Some(one(0, 0)),
            }
        }
        TimeSel::Step { delay } => {
            let t = step.unwrap_or(0);
            if t < delay {
                return None;
            }
            Some(one(
                if xseq { (t - delay) * xrow } else { 0 },
                if yseq { t * yrow } else { 0 },
            ))
        }
    }
}

/// One block of rows of a library op: `rows` rows read at element `x` of the source's slot
/// and written at element `y` of the destination's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub rows: usize,
    pub x: usize,
    pub y: usize,
    /// An earlier block of this op already wrote the same source rows: a static source read
    /// by every step, whose backward op must add into what the first block wrote.
    pub x_again: bool,
}

/// The blocks of one op at one step (see [`Runner::blocks`]).
pub struct Blocks {
    span: Option<Span>,
    i: usize,
}

impl Iterator for Blocks {
    type Item = Block;
    fn next(&mut self) -> Option<Block> {
        let s = self.span?;
        if self.i >= s.count {
            return None;
        }
        let i = self.i;
        self.i += 1;
        Some(Block {
            rows: s.rows,
            x: s.x0 + i * s.xs,
            y: s.y0 + i * s.ys,
            x_again: i > 0 && s.xs == 0,
        })
    }
}

/// What a library op runs with: the device, the plan, the host copies of the weights and
/// parameters (time matrices are built on the host from them) and the current `(T, B, t)`.
pub struct Runner<'a> {
    pub dev: &'a mut dyn Device,
    pub plan: &'a Plan,
    pub weights: &'a [Vec<f32>],
    pub params: &'a [f32],
    pub t_len: usize,
    pub batch: usize,
    /// The step inside a step loop.
    pub step: Option<usize>,
    /// A calibration run: per weight, the non-zero and total input elements its forward
    /// projections read (see [`crate::Session::projection_input_rates`]).
    pub probe: Option<&'a RefCell<Vec<(u64, u64)>>>,
}

impl Runner<'_> {
    /// The declaration of buffer `id`.
    pub fn buf(&self, id: BufId) -> &BufferDecl {
        &self.plan.buffers[id]
    }

    /// The row blocks an op with source `x`, destination `y` and time selection `time`
    /// touches at the current step (none before its delay).
    pub fn blocks(&self, time: TimeSel, x: BufId, y: BufId) -> Blocks {
        let (xd, yd) = (self.buf(x), self.buf(y));
        Blocks {
            span: span(time, xd, yd, self.t_len, self.batch, self.step),
            i: 0,
        }
    }

    /// Counts, for a calibration run, the non-zero elements among the `len` that weight `w`'s
    /// projection reads at `x`.
    pub fn probe_input(&mut self, w: WeightId, x: Loc, len: usize) -> Result<()> {
        if let Some(p) = self.probe {
            let nz = self.dev.count_nonzero(x, len)?;
            let c = &mut p.borrow_mut()[w];
            c.0 += nz as u64;
            c.1 += len as u64;
        }
        Ok(())
    }
}

/// Which op list of a validated plan to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    Backward,
}

/// Runs the forward or backward ops of `vp` for `t_len` steps of `batch` samples.
pub(crate) fn run(vp: &ValidPlan, pass: Pass, mut r: Runner<'_>) -> Result<()> {
    let (ops, launches) = match pass {
        Pass::Forward => (&vp.plan().ops[..], &vp.info().forward_launches[..]),
        Pass::Backward => match &vp.plan().train {
            Some(tp) => (&tp.backward[..], &vp.info().backward_launches[..]),
            None => return Ok(()),
        },
    };
    let mut next = 0;
    walk(&mut r, ops, launches, &mut next)
}

/// Runs the first `n` forward ops of `vp` (a learning pass that needs no more; the launch
/// descriptors are in pre-order, so a prefix uses their prefix).
pub(crate) fn run_forward_prefix(vp: &ValidPlan, n: usize, mut r: Runner<'_>) -> Result<()> {
    let ops = &vp.plan().ops;
    let mut next = 0;
    walk(
        &mut r,
        &ops[..n.min(ops.len())],
        &vp.info().forward_launches,
        &mut next,
    )
}

/// Runs `ops`; `next` is the index in `launches` of the next [`Op::Launch`] in pre-order.
fn walk(
    r: &mut Runner<'_>,
    ops: &[Op],
    launches: &[Vec<GroupDesc>],
    next: &mut usize,
) -> Result<()> {
    for op in ops {
        match op {
            Op::Zero { buf } => {
                let d = &r.plan.buffers[*buf];
                r.dev
                    .zero(Loc::new(d.slot, 0), buffer_len(d, r.t_len, r.batch)?)?;
            }
            Op::Launch { kernel, time, .. } => {
                r.dev.launch(&LaunchDesc {
                    kernel: *kernel,
                    groups: &launches[*next],
                    time: *time,
                    t_len: r.t_len,
                    t_step: r.step.unwrap_or(0),
                    batch: r.batch,
                })?;
                *next += 1;
            }
            Op::StepLoop { body } | Op::ReverseStepLoop { body } => {
                let reverse = matches!(op, Op::ReverseStepLoop { .. });
                let first = *next;
                for i in 0..r.t_len {
                    *next = first;
                    r.step = Some(if reverse { r.t_len - 1 - i } else { i });
                    walk(r, body, launches, next)?;
                }
                r.step = None;
                *next = first + launch_count(body);
            }
            _ => match op.library() {
                Some(lib) => lib.run(r)?,
                None => unreachable!("every op is a control op or a library op"),
            },
        }
    }
    Ok(())
}

/// The number of [`Op::Launch`]es in `ops`, loops included.
pub(crate) fn launch_count(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Launch { .. } => 1,
            Op::StepLoop { body } | Op::ReverseStepLoop { body } => launch_count(body),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bd(extent: Extent, features: usize) -> BufferDecl {
        BufferDecl {
            name: "b".into(),
            extent,
            features,
            slot: 0,
        }
    }

    #[test]
    fn spans() {
        let seq = bd(Extent::Seq, 3);
        let st = bd(Extent::Static, 3);
        let seq2 = bd(Extent::Seq, 5);
        // Seq -> Seq, delay 1, T = 4, B = 2
        let s = span(TimeSel::All { delay: 1 }, &seq, &seq2, 4, 2, None).unwrap();
        assert_eq!((s.count, s.rows, s.x0, s.y0), (1, 6, 0, 10));
        assert_eq!(
            span(TimeSel::All { delay: 4 }, &seq, &seq2, 4, 2, None),
            None
        );
        // Static -> Seq: one block per step
        let s = span(TimeSel::All { delay: 1 }, &st, &seq2, 4, 2, None).unwrap();
        assert_eq!((s.count, s.rows, s.xs, s.y0, s.ys), (3, 2, 0, 10, 10));
        // Step
        assert_eq!(
            span(TimeSel::Step { delay: 2 }, &seq, &seq2, 4, 2, Some(1)),
            None
        );
        let s = span(TimeSel::Step { delay: 1 }, &seq, &seq2, 4, 2, Some(3)).unwrap();
        assert_eq!((s.rows, s.x0, s.y0), (2, 12, 30));
        let single = bd(Extent::Single, 5);
        let s = span(TimeSel::Step { delay: 0 }, &st, &single, 4, 2, Some(3)).unwrap();
        assert_eq!((s.rows, s.x0, s.y0), (2, 0, 0));
    }

    #[test]
    fn blocks_mark_a_static_source_read_again() {
        let s = Span {
            count: 3,
            rows: 2,
            x0: 0,
            xs: 0,
            y0: 10,
            ys: 10,
        };
        let b: Vec<Block> = Blocks {
            span: Some(s),
            i: 0,
        }
        .collect();
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].x_again, b[1].x_again, b[2].y), (false, true, 30));
    }
}
