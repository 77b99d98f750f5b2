//! One training step as a library call: forward, the plan's loss and regularisers with
//! their gradients, backward, gradient clipping, the optimizer step, weights written back.
//! `snnc train`, `snnc bench mlp-train` and the `snn!` macro's users share it, so a step
//! timed by the benchmark is the step the trainer takes.

use std::path::Path;

use super::loss::{self, LossOut};
use super::optim::{self, Optimizer};
use super::schedule::LrSchedule;
use crate::error::{Result, RuntimeError};
use crate::exec::Session;
use crate::plan::{
    LossKind, LrScheduleDecl, OptimizerKind, OutputDecl, OutputKind, Plan, TrainSettings,
};
use crate::tensor::Tensor;

/// What one batch gave: the loss (with regularisers), correct predictions, and activity.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    /// Mean spikes per neuron per step of each counts/spikes output, in plan order.
    pub rates: Vec<f64>,
    /// Spikes per sample summed over the counts outputs.
    pub spikes_per_sample: f64,
}

/// The loss of a training plan on the outputs of a forward run, its gradients with respect
/// to the loss output and each regulariser's output (the order [`Session::backward`]
/// takes), and the batch's statistics.
pub fn loss_and_grads(
    plan: &Plan,
    outs: &[(OutputDecl, Tensor)],
    labels: &[u32],
    t: usize,
) -> Result<(StepStats, Vec<Vec<f32>>)> {
    let tp = plan.train.as_ref().ok_or_else(|| {
        RuntimeError::InvalidArgument("this plan was not compiled for training".into())
    })?;
    let b = labels.len();
    let (od, out) = &outs[tp.loss.output];
    let c: usize = od.shape.iter().product();
    let lo: LossOut = match tp.loss.kind {
        LossKind::CrossEntropyCounts => loss::cross_entropy_counts(&out.data, labels, b, c),
        LossKind::CrossEntropyMaxMembrane => {
            loss::cross_entropy_membrane(&out.data, labels, t, b, c, loss::Reduce::Max)
        }
        LossKind::CrossEntropyMeanMembrane => {
            loss::cross_entropy_membrane(&out.data, labels, t, b, c, loss::Reduce::Mean)
        }
        LossKind::MseCounts { on, off, groups } => {
            loss::mse_counts(&out.data, labels, t, b, c, on, off, groups)
        }
        LossKind::FirstSpikeTime => loss::first_spike_time(&out.data, labels, t, b, c),
    };
    let mut total = lo.loss as f64;
    let mut grads = vec![lo.grad];
    for r in &tp.regularizers {
        let (od, counts) = &outs[r.output];
        let n: usize = od.shape.iter().product();
        let (l, g) = loss::spike_rate_reg(&counts.data, t, b, n, r.lambda, r.target);
        total += l as f64;
        grads.push(g);
    }
    let mut rates = Vec::new();
    let mut spikes = 0.0f64;
    for (od, v) in outs {
        if matches!(od.kind, OutputKind::Counts | OutputKind::Spikes) {
            let sum: f64 = v.data.iter().map(|&x| x as f64).sum();
            let n: usize = od.shape.iter().product();
            rates.push(sum / (t * b * n) as f64);
            if od.kind == OutputKind::Counts {
                spikes += sum / b as f64;
            }
        }
    }
    Ok((
        StepStats {
            loss: total,
            correct: lo.correct,
            rates,
            spikes_per_sample: spikes,
        },
        grads,
    ))
}

/// The optimizer, schedule and clipping of a plan's `train { }` block.
#[derive(Clone, Debug)]
pub struct Trainer {
    pub optimizer: Optimizer,
    pub schedule: LrSchedule,
    pub base_lr: f32,
    pub warmup: usize,
    pub clip: Option<f32>,
}

impl Trainer {
    /// The trainer a plan's settings describe.
    pub fn new(settings: &TrainSettings) -> Trainer {
        let o = &settings.optimizer;
        let optimizer = match o.kind {
            OptimizerKind::Sgd { momentum, nesterov } => {
                Optimizer::sgd(momentum, nesterov, o.weight_decay)
            }
            OptimizerKind::Adam => Optimizer::adam(o.betas, o.eps, o.weight_decay),
            OptimizerKind::AdamW => Optimizer::adamw(o.betas, o.eps, o.weight_decay),
        };
        let schedule = match settings.schedule {
            LrScheduleDecl::Constant => LrSchedule::Constant,
            LrScheduleDecl::Step { step_size, gamma } => LrSchedule::Step { step_size, gamma },
            LrScheduleDecl::Cosine { eta_min } => LrSchedule::Cosine {
                t_max: settings.epochs,
                eta_min,
            },
        };
        Trainer {
            optimizer,
            schedule,
            base_lr: o.lr,
            warmup: settings.warmup,
            clip: settings.clip,
        }
    }

    /// The learning rate of `epoch` (0-based), warm-up included.
    pub fn lr(&self, epoch: usize) -> f32 {
        self.schedule.lr_at_warmup(self.base_lr, epoch, self.warmup)
    }

    /// One learning step on a batch: forward, loss, backward, clip, optimizer step with
    /// learning rate `lr`. The weights are updated only when the loss is finite; a NaN or
    /// infinite loss is returned in the stats for the caller to report.
    ///
    /// The optimizer runs on the session's device ([`Session::apply_updates`]): weights,
    /// gradients and the optimizer's state stay there, and only the outputs, the loss
    /// gradients and (with clipping) one norm per tensor cross to the host. The host copy of
    /// the weights is stale afterwards until [`Session::sync_weights`];
    /// [`Trainer::save_checkpoint`] syncs itself.
    pub fn step(
        &mut self,
        s: &mut Session,
        inputs: &[Tensor],
        labels: &[u32],
        t: usize,
        lr: f32,
    ) -> Result<StepStats> {
        let b = labels.len();
        let outs = s.run(inputs, t, b)?;
        let (stats, grads) = loss_and_grads(s.plan(), &outs, labels, t)?;
        if !stats.loss.is_finite() {
            return Ok(stats);
        }
        let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        s.backward(&refs, t, b)?;
        let scale = match self.clip {
            Some(max) => optim::clip_coef(max, s.grad_norm()?),
            None => None,
        };
        let updates: Vec<optim::Update> = (0..s.plan().weights.len())
            .map(|i| self.optimizer.next_update(i, lr))
            .collect();
        s.apply_updates(&updates, scale)?;
        Ok(stats)
    }

    /// Writes `checkpoint.safetensors`-style state atomically: the weights under their plan
    /// names, the optimizer state as `optim.*`, and `meta.epoch` (epochs completed). Both
    /// are first copied from the device.
    pub fn save_checkpoint(&mut self, s: &mut Session, epoch: usize, path: &Path) -> Result<()> {
        s.sync_weights()?;
        for i in 0..s.plan().weights.len() {
            if self.optimizer.buffers(i).is_some() {
                let (buf, sq) = s.optim_state(i)?;
                self.optimizer.set_buffers(i, buf, sq);
            }
        }
        let plan = s.plan();
        let mut list: Vec<(String, Vec<usize>, Vec<f32>)> = plan
            .weights
            .iter()
            .zip(s.weights())
            .map(|(d, w)| (d.name.clone(), d.shape.clone(), w.clone()))
            .collect();
        for (name, v) in self.optimizer.state() {
            list.push((format!("optim.{name}"), vec![v.len()], v));
        }
        list.push(("meta.epoch".into(), vec![1], vec![epoch as f32]));
        let refs: Vec<(String, Vec<usize>, &[f32])> = list
            .iter()
            .map(|(n, sh, v)| (n.clone(), sh.clone(), v.as_slice()))
            .collect();
        crate::io::weights::save(path, &refs)
    }

    /// Restores weights and optimizer state from [`Trainer::save_checkpoint`]'s file;
    /// returns the number of epochs it had completed.
    pub fn load_checkpoint(&mut self, s: &mut Session, path: &Path) -> Result<usize> {
        let tensors = crate::io::weights::load(path)?;
        let mut epoch = None;
        let mut state = Vec::new();
        let mut weights = s.weights().to_vec();
        let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
        let mut seen = vec![false; names.len()];
        for (name, _shape, data) in tensors {
            if name == "meta.epoch" {
                epoch = data.first().map(|&e| e as usize);
            } else if let Some(rest) = name.strip_prefix("optim.") {
                state.push((rest.to_string(), data));
            } else if let Some(i) = names.iter().position(|n| *n == name) {
                if data.len() != weights[i].len() {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "checkpoint `{}`: tensor `{name}` has {} elements, this model's has {}",
                        path.display(),
                        data.len(),
                        weights[i].len()
                    )));
                }
                weights[i] = data;
                seen[i] = true;
            }
        }
        let Some(epoch) = epoch.filter(|_| seen.iter().all(|&x| x)) else {
            return Err(RuntimeError::InvalidArgument(format!(
                "`{}` is not a training checkpoint of this model (resume from the \
                 checkpoint.safetensors that `snnc train` wrote)",
                path.display()
            )));
        };
        s.set_all_weights(weights)?;
        self.optimizer.load_state(state)?;
        for i in 0..s.plan().weights.len() {
            if let Some((buf, sq)) = self.optimizer.buffers(i) {
                let (buf, sq) = (buf.to_vec(), sq.to_vec());
                s.set_optim_state(i, &buf, &sq)?;
            }
        }
        Ok(epoch)
    }
}
