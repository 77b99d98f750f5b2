//! What a plan will allocate, in bytes, computed from the plan alone before anything is
//! allocated: every weight (a host copy and the device's, plus its gradient and optimizer
//! state when training), every buffer slot for `(t, batch)`, and the host copies of the
//! inputs and outputs. Arithmetic saturates at `u64::MAX`, which is over every budget, so a
//! gigantic shape is the same "too large" error as a merely large one, never a wrap.
//! [`Session`](super::Session) checks it against its [`Budget`] before allocating; the
//! compiler maps each part's name back to its layer for a located error.

use crate::budget::{fmt_bytes, Budget};
use crate::error::{Result, RuntimeError};
use crate::plan::{BufferDecl, Extent, OptimizerKind, Plan};

/// The bytes one plan needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Footprint {
    /// The `(t, batch)` the slots were sized for; `None`: the weights alone.
    pub sizes: Option<(usize, usize)>,
    /// Gradients and optimizer state counted.
    pub training: bool,
    pub parts: Vec<Part>,
    /// The sum of the parts (saturated).
    pub total: u64,
}

/// One allocation (or one kind of allocation of one weight or buffer).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// The weight's or buffer's name in the plan (`h.weight`, `s1.spikes`): the layer's
    /// name, then a dot and a role.
    pub name: String,
    pub kind: PartKind,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// A weight: host and device copies, with gradient and optimizer state when training.
    Weight,
    /// A device slot, named after the largest buffer it holds.
    Slot,
    /// The host tensor of an input or an output.
    HostCopy,
}

const F32: u64 = 4;

fn sat(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Elements of a buffer for `(t, batch)`, saturated.
fn buffer_elems(b: &BufferDecl, t: usize, batch: usize) -> u64 {
    let rows = match b.extent {
        Extent::Seq => sat(t).saturating_mul(sat(batch)),
        Extent::Static | Extent::Single => sat(batch),
    };
    rows.saturating_mul(sat(b.features))
}

/// How many weight-sized arrays a weight costs: the session's host copy and the device's,
/// then the gradient and the optimizer's state buffers when training.
fn weight_copies(plan: &Plan, training: bool) -> u64 {
    let mut n = 2;
    if let (true, Some(tp)) = (training, &plan.train) {
        n += 1;
        n += match tp.settings.optimizer.kind {
            OptimizerKind::Sgd { momentum, .. } => u64::from(momentum != 0.0),
            OptimizerKind::Adam | OptimizerKind::AdamW => 2,
        };
    }
    n
}

impl Footprint {
    /// The weights alone (what a session allocates when it is created).
    pub fn weights(plan: &Plan, training: bool) -> Footprint {
        let copies = weight_copies(plan, training);
        let parts = plan
            .weights
            .iter()
            .map(|w| Part {
                name: w.name.clone(),
                kind: PartKind::Weight,
                bytes: w
                    .shape
                    .iter()
                    .fold(1u64, |acc, &d| acc.saturating_mul(sat(d)))
                    .saturating_mul(F32 * copies),
            })
            .collect();
        Footprint::new(None, training, parts)
    }

    /// Everything a run (and, when `training`, a training step) for `(t, batch)` allocates.
    pub fn run(plan: &Plan, t: usize, batch: usize, training: bool) -> Footprint {
        let mut fp = Footprint::weights(plan, training);
        // A slot is as large as its largest buffer.
        let mut slots: Vec<Option<(u64, &str)>> = vec![None; plan.slots];
        for b in &plan.buffers {
            let bytes = buffer_elems(b, t, batch).saturating_mul(F32);
            if let Some(s) = slots.get_mut(b.slot) {
                if s.is_none_or(|(size, _)| bytes > size) {
                    *s = Some((bytes, &b.name));
                }
            }
        }
        for (bytes, name) in slots.into_iter().flatten() {
            fp.parts.push(Part {
                name: name.to_string(),
                kind: PartKind::Slot,
                bytes,
            });
        }
        let host =
            (plan.inputs.iter().map(|i| i.buffer)).chain(plan.outputs.iter().map(|o| o.buffer));
        for buf in host {
            if let Some(b) = plan.buffers.get(buf) {
                fp.parts.push(Part {
                    name: b.name.clone(),
                    kind: PartKind::HostCopy,
                    bytes: buffer_elems(b, t, batch).saturating_mul(F32),
                });
            }
        }
        Footprint::new(Some((t, batch)), training, fp.parts)
    }

    fn new(sizes: Option<(usize, usize)>, training: bool, parts: Vec<Part>) -> Footprint {
        let total = parts.iter().fold(0u64, |a, p| a.saturating_add(p.bytes));
        Footprint {
            sizes,
            training,
            parts,
            total,
        }
    }

    /// The single largest part.
    pub fn largest(&self) -> Option<&Part> {
        self.parts.iter().max_by_key(|p| p.bytes)
    }

    /// `the model needs 1.2 GB for T=8, batch=32` (`to train with`, `'s weights need`).
    pub fn describe(&self) -> String {
        let verb = if self.training { "to train" } else { "" };
        match self.sizes {
            Some((t, b)) => {
                let sep = if verb.is_empty() { "" } else { " " };
                format!(
                    "the model needs {}{sep}{verb} for T={t}, batch={b}",
                    fmt_bytes(self.total)
                )
            }
            None => {
                let verb = if verb.is_empty() { "" } else { " to train" };
                format!("the model's weights need {}{verb}", fmt_bytes(self.total))
            }
        }
    }

    /// An error when the footprint is over `budget`.
    pub fn check(&self, budget: &Budget) -> Result<()> {
        if self.total <= budget.bytes {
            return Ok(());
        }
        Err(RuntimeError::MemoryBudget {
            needs: self.describe(),
            budget: budget.to_string(),
            largest: self.largest().map(|p| (p.name.clone(), fmt_bytes(p.bytes))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Init, WeightDecl};

    fn plan(shape: Vec<usize>) -> Plan {
        Plan {
            name: "m".into(),
            t: 4,
            batch: 2,
            seed: 0,
            buffers: vec![
                BufferDecl {
                    name: "x".into(),
                    extent: Extent::Seq,
                    features: 10,
                    slot: 0,
                },
                BufferDecl {
                    name: "y".into(),
                    extent: Extent::Seq,
                    features: 30,
                    slot: 0,
                },
            ],
            slots: 1,
            weights: vec![WeightDecl {
                name: "h.weight".into(),
                shape,
                init: Init::Zeros,
            }],
            params: vec![],
            inputs: vec![],
            outputs: vec![],
            kernels: vec![],
            ops: vec![],
            train: None,
            learn: vec![],
        }
    }

    #[test]
    fn slots_take_their_largest_buffer() {
        let fp = Footprint::run(&plan(vec![3, 5]), 4, 2, false);
        // weight: 15 elements x 2 copies; slot: 4 * 2 * 30 elements.
        assert_eq!(fp.total, (15 * 2 + 240) * 4);
        assert_eq!(fp.largest().unwrap().name, "y");
    }

    #[test]
    fn overflow_saturates_and_fails_any_budget() {
        let fp = Footprint::run(&plan(vec![usize::MAX, 3]), usize::MAX, 2, false);
        assert_eq!(fp.total, u64::MAX);
        let e = fp.check(&Budget::given(u64::MAX - 1, "test")).unwrap_err();
        assert!(e.to_string().contains("more than 18.4 EB"), "{e}");
    }
}
