//! The session API: a [`Session`] owns a validated plan, a device (with the plan's
//! kernels), the weights and the flat parameter array, and runs the plan on input tensors.
//! Parameters live in one flat `f32` array the kernels read at run time, so changing a
//! parameter never needs a recompilation.

use super::footprint::Footprint;
use super::interp::{self, buffer_len, Pass, Runner};
use super::validate::{validate, ValidPlan};
use crate::budget::Budget;
use crate::cpu::CpuDevice;
use crate::device::{Device, Loc};
use crate::error::{fmt_shape, Result, RuntimeError};
use crate::io::weights;
use crate::kernels::KernelTable;
use crate::op::plastic::PlasticDesc;
use crate::plan::*;
use crate::rng;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

pub struct Session {
    plan: ValidPlan,
    device: Box<dyn Device>,
    weights: Vec<Vec<f32>>,
    /// The host copies in `weights` are older than the device's, after optimizer steps on
    /// the device ([`Session::apply_updates`]), except those in `host_read`.
    weights_stale: bool,
    params: Vec<f32>,
    weight_index: HashMap<String, WeightId>,
    param_index: HashMap<String, usize>,
    slot_sizes: Option<Vec<usize>>,
    /// What the weights and each run's slots may take; checked before allocating.
    budget: Budget,
    /// The rule parameters of each [`crate::plan::LearnLayer`] (f64), as set now.
    rule_params: Vec<Vec<f64>>,
    /// Which learn layers [`Session::learn`] runs (all, until [`Session::set_learning`]).
    learning: Vec<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("plan", &self.plan.plan().name)
            .field("device", &self.device.name())
            .field("params", &self.params)
            .finish()
    }
}

impl Session {
    /// A session on the CPU device. Validates the plan against the kernel table and
    /// initialises the weights from `plan.seed`.
    pub fn new(plan: Plan, kernels: KernelTable) -> Result<Session> {
        Session::with_device(plan, Box::new(CpuDevice::new(kernels)))
    }

    /// A session on CUDA device `ordinal`: `cuda_source` (the CUDA back end's printout of
    /// this plan's kernels) is compiled by NVRTC, through the disk cache. No driver, no
    /// device or an NVRTC error is an error, never a panic.
    pub fn new_cuda(plan: Plan, ordinal: usize, cuda_source: &str) -> Result<Session> {
        let symbols = plan.kernels.iter().map(|k| k.symbol.clone()).collect();
        let headers = [(crate::cuda::PRELUDE_NAME, crate::cuda::PRELUDE)];
        let dev = crate::cuda::CudaDevice::new(ordinal, cuda_source, &headers, symbols)?;
        Session::with_device(plan, Box::new(dev))
    }

    /// A session on the CUDA device with the host standing in for the GPU
    /// ([`crate::cuda::ShimGpu`]): `cuda_source` compiled by the system C++ compiler through
    /// kernels/cuda/host_shim.h, libraries kept in `dir`. Slow; it runs the CUDA device's
    /// code on machines without a GPU.
    pub fn new_cuda_shim(plan: Plan, cuda_source: &str, dir: &Path) -> Result<Session> {
        let cxx = crate::cuda::shim::find_cxx().ok_or_else(|| {
            RuntimeError::Device(
                "no C++ compiler for the CUDA host shim; hint: install g++ or set CXX".into(),
            )
        })?;
        let symbols: Vec<String> = plan.kernels.iter().map(|k| k.symbol.clone()).collect();
        let gpu = crate::cuda::ShimGpu::build(&cxx, dir, cuda_source, &[], &symbols)?;
        Session::with_device(plan, Box::new(crate::cuda::CudaDevice::with_gpu(gpu)))
    }

    /// A session on any device (the device holds the plan's kernels). The weights are
    /// sized against [`Budget::current`] before they are allocated.
    pub fn with_device(plan: Plan, mut device: Box<dyn Device>) -> Result<Session> {
        let budget = Budget::current();
        Footprint::weights(&plan, plan.train.is_some()).check(&budget)?;
        let plan = validate(plan, device.num_kernels())?;
        let weight_index = plan
            .plan()
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| (w.name.clone(), i))
            .collect();
        let param_index = plan
            .plan()
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let params: Vec<f32> = plan.plan().params.iter().map(|p| p.value).collect();
        device.set_params(&params)?;
        let rule_params = (plan.plan().learn.iter())
            .map(|l| l.params.iter().map(|p| p.value).collect())
            .collect();
        let learning = vec![true; plan.plan().learn.len()];
        let mut s = Session {
            weights: (plan.plan().weights.iter())
                .map(|w| vec![0.0; w.numel()])
                .collect(),
            weights_stale: false,
            plan,
            device,
            params,
            weight_index,
            param_index,
            slot_sizes: None,
            budget,
            rule_params,
            learning,
        };
        s.init_weights(s.plan.plan().seed)?;
        Ok(s)
    }

    pub fn plan(&self) -> &Plan {
        self.plan.plan()
    }

    /// The device's description.
    pub fn device_name(&self) -> String {
        self.device.name()
    }

    /// Re-initialises every weight from `seed`: `UniformFanIn { fan_in }` draws
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` from the Philox stream
    /// `(seed, weight index, rng::stream::WEIGHTS)` (see [`rng::fill_uniform01`]).
    pub fn init_weights(&mut self, seed: u64) -> Result<()> {
        for (i, decl) in self.plan.plan().weights.iter().enumerate() {
            let w = &mut self.weights[i];
            match decl.init {
                Init::Zeros => w.fill(0.0),
                Init::Constant(v) => w.fill(v),
                Init::Frozen(ref v) => w.copy_from_slice(v),
                Init::Geometric { ratio } => {
                    let n = w.len();
                    for (j, v) in w.iter_mut().enumerate() {
                        *v = ratio.powi((n - 1 - j) as i32);
                    }
                }
                Init::UniformFanIn { fan_in, gain } => {
                    let bound = gain / (fan_in as f32).sqrt();
                    rng::fill_uniform01(w, seed, i as u32, rng::stream::WEIGHTS);
                    w.iter_mut().for_each(|v| *v = (2.0 * *v - 1.0) * bound);
                }
            }
            self.device.set_weight(i, w)?;
        }
        Ok(())
    }

    /// Loads weights (and optionally parameters) from a safetensors file. Every weight must
    /// be present with its exact shape; a tensor named like a parameter (shape `[]` or `[1]`)
    /// sets it after its check; any other tensor is an error. Nothing changes on error.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors = weights::load(path)?;
        let origin = format!("weights file `{}`", path.display());
        let mut new_weights: Vec<Option<Vec<f32>>> = vec![None; self.weights.len()];
        let mut new_params: Vec<(usize, f32)> = Vec::new();
        let mut unknown = Vec::new();
        for (name, shape, data) in tensors {
            if let Some(&i) = self.weight_index.get(&name) {
                // A frozen weight is the compiler's constant: a file cannot replace it.
                if self.plan.plan().weights[i].frozen() {
                    continue;
                }
                let expected = &self.plan.plan().weights[i].shape;
                if &shape != expected {
                    return Err(RuntimeError::Shape {
                        what: format!("{origin}: tensor `{name}`"),
                        expected: expected.clone(),
                        found: shape,
                    });
                }
                new_weights[i] = Some(data);
            } else if let Some(&i) = self.param_index.get(&name) {
                if !(shape.is_empty() || shape == [1]) {
                    return Err(RuntimeError::Shape {
                        what: format!("{origin}: parameter tensor `{name}`"),
                        expected: vec![1],
                        found: shape,
                    });
                }
                let decl = &self.plan.plan().params[i];
                let v = data[0];
                if !decl.check.holds(v) {
                    return Err(RuntimeError::BadParam {
                        name,
                        value: v,
                        expected: decl.check.describe(),
                        origin,
                    });
                }
                new_params.push((i, v));
            } else {
                unknown.push(name);
            }
        }
        if !unknown.is_empty() {
            return Err(RuntimeError::UnknownTensors {
                path: path.to_path_buf(),
                names: unknown,
                known: self.known_tensor_names(),
            });
        }
        let missing: Vec<String> = new_weights
            .iter()
            .zip(&self.plan.plan().weights)
            .filter(|(w, d)| w.is_none() && !d.frozen())
            .map(|(_, d)| d.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(RuntimeError::MissingTensors {
                path: path.to_path_buf(),
                names: missing,
            });
        }
        for (i, w) in new_weights.into_iter().enumerate() {
            let Some(w) = w else {
                continue; // frozen: kept
            };
            self.device.set_weight(i, &w)?;
            self.weights[i] = w;
        }
        // Every weight was replaced (a missing one is an error above; frozen ones never
        // change): host and device agree.
        self.weights_stale = false;
        if !new_params.is_empty() {
            for (i, v) in new_params {
                self.params[i] = v;
            }
            self.device.set_params(&self.params)?;
        }
        Ok(())
    }

    /// Saves every weight and every parameter (as a shape-`[1]` tensor) to a safetensors
    /// file, atomically.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        if self.weights_stale {
            return Err(RuntimeError::InvalidArgument(
                "save_weights: the weights changed on the device since the host copy was \
                 taken; call sync_weights first"
                    .into(),
            ));
        }
        let mut list: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (d, w) in self.plan.plan().weights.iter().zip(&self.weights) {
            if d.frozen() {
                continue;
            }
            list.push((d.name.clone(), d.shape.clone(), w));
        }
        for (i, d) in self.plan.plan().params.iter().enumerate() {
            list.push((d.name.clone(), vec![1], &self.params[i..i + 1]));
        }
        weights::save(path, &list)
    }

    fn known_tensor_names(&self) -> Vec<String> {
        self.plan
            .plan()
            .weights
            .iter()
            .map(|w| w.name.clone())
            .chain(self.plan.plan().params.iter().map(|p| p.name.clone()))
            .collect()
    }

    /// A parameter's current value.
    pub fn param(&self, name: &str) -> Option<f32> {
        self.param_index.get(name).map(|&i| self.params[i])
    }

    /// `(name, value)` of every parameter, in plan order.
    pub fn params(&self) -> Vec<(&str, f32)> {
        self.plan
            .plan()
            .params
            .iter()
            .zip(&self.params)
            .map(|(d, &v)| (d.name.as_str(), v))
            .collect()
    }

    /// The flat parameter array the kernels read.
    pub fn param_array(&self) -> &[f32] {
        &self.params
    }

    /// Sets a parameter after checking its constraint. Takes effect on the next run.
    /// Set a parameter by value (a seed parameter takes the seed as a whole number).
    pub fn set_param(&mut self, name: &str, value: f32) -> Result<()> {
        if self.weight_index.contains_key(name) {
            return Err(RuntimeError::InvalidArgument(format!(
                "`{name}` is a weight, not a run-time parameter (a learned neuron parameter, \
                 `learn(...)`, is a weight): set it with set_weight or a weights file"
            )));
        }
        let i = *self
            .param_index
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownParam {
                name: name.to_string(),
                known: self
                    .plan
                    .plan()
                    .params
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
            })?;
        let check = self.plan.plan().params[i].check;
        // A seed is given as a number and stored as its 32 raw bits.
        let stored = if check == ParamCheck::Bits {
            if !(value >= 0.0 && value.fract() == 0.0 && value <= 16_777_216.0) {
                return Err(RuntimeError::BadParam {
                    name: name.to_string(),
                    value,
                    expected: "a whole number in 0..=16777216 (a seed)",
                    origin: String::new(),
                });
            }
            f32::from_bits(value as u32)
        } else {
            value
        };
        if !check.holds(value) {
            return Err(RuntimeError::BadParam {
                name: name.to_string(),
                value,
                expected: check.describe(),
                origin: String::new(),
            });
        }
        self.params[i] = stored;
        self.device.set_params(&self.params)
    }

    /// A weight's values (row-major, shape from the plan): the host copy, stale after
    /// optimizer steps on the device until [`Session::sync_weights`] (see
    /// [`Session::weights`]).
    pub fn weight(&self, name: &str) -> Option<&[f32]> {
        self.weight_index
            .get(name)
            .map(|&i| self.weights[i].as_slice())
    }

    /// Replaces a weight's values; the length must match its shape.
    pub fn set_weight(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let i = *self
            .weight_index
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownWeight {
                name: name.to_string(),
                known: self
                    .plan
                    .plan()
                    .weights
                    .iter()
                    .map(|w| w.name.clone())
                    .collect(),
            })?;
        let decl = &self.plan.plan().weights[i];
        if data.len() != decl.numel() {
            return Err(RuntimeError::InvalidArgument(format!(
                "set_weight `{name}`: the weight has shape {} ({} values), {} values given",
                fmt_shape(&decl.shape),
                decl.numel(),
                data.len()
            )));
        }
        self.device.set_weight(i, data)?;
        self.weights[i].copy_from_slice(data);
        Ok(())
    }

    /// The expected shape of input `i` for `(t, batch)`.
    pub fn input_shape(&self, i: usize, t: usize, batch: usize) -> Option<Vec<usize>> {
        let d = self.plan.plan().inputs.get(i)?;
        let mut s = if d.time_varying {
            vec![t, batch]
        } else {
            vec![batch]
        };
        s.extend(&d.shape);
        Some(s)
    }

    /// Seeded uniform `[0, 1)` inputs of the right shapes: input `i` is the Philox stream
    /// `(seed, i, rng::stream::INPUTS)`.
    /// They are allocated here, before [`Session::run`] sizes the run: for sizes that may
    /// not fit, check [`Session::footprint`] against [`Session::memory_budget`] first.
    pub fn random_inputs(&self, t: usize, batch: usize, seed: u64) -> Vec<Tensor> {
        (0..self.plan.plan().inputs.len())
            .map(|i| {
                let shape = self.input_shape(i, t, batch).unwrap_or_default();
                let mut x = Tensor::zeros(&shape);
                rng::fill_uniform01(&mut x.data, seed, i as u32, rng::stream::INPUTS);
                x
            })
            .collect()
    }

    /// The memory budget runs are checked against (from [`Budget::current`] when the
    /// session was made).
    pub fn memory_budget(&self) -> &Budget {
        &self.budget
    }

    /// Changes the memory budget for later runs.
    pub fn set_memory_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// The bytes a run for `(t, batch)` needs: weights (with gradients and optimizer state
    /// for a training plan), slots, host copies of inputs and outputs.
    pub fn footprint(&self, t: usize, batch: usize) -> Footprint {
        let plan = self.plan.plan();
        Footprint::run(plan, t, batch, plan.train.is_some())
    }

    /// Slot sizes (elements) for `(t, batch)`.
    pub fn slot_sizes(&self, t: usize, batch: usize) -> Result<Vec<usize>> {
        let mut sizes = vec![0usize; self.plan.plan().slots];
        for b in &self.plan.plan().buffers {
            let len = buffer_len(b, t, batch)?;
            sizes[b.slot] = sizes[b.slot].max(len);
        }
        Ok(sizes)
    }

    /// Runs the plan for `t` steps on a batch of `batch` samples. `inputs` holds one tensor
    /// per `plan.inputs` entry, `[T, B, ...shape]` (time-varying) or `[B, ...shape]`.
    /// Returns every output: `[T, B, ...shape]` for spikes and traces, `[B, ...shape]` for
    /// counts.
    ///
    /// Slot memory is kept between runs while `(t, batch)` keeps the slot sizes unchanged
    /// (and is zeroed when reallocated), so a plan must zero what it accumulates into or
    /// leaves partly unwritten (the compiler emits [`Op::Zero`] for that).
    pub fn run(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
    ) -> Result<Vec<(OutputDecl, Tensor)>> {
        self.run_probed(inputs, t, batch, None)
    }

    /// The input rate of every projection (`Op::Gemm` and `Op::Conv2d` of the forward plan)
    /// on these inputs: one forward run (as [`Session::run`]) that also counts, before each
    /// GEMM or convolution, the non-zero elements of the input it reads, summed over the
    /// steps of a step loop. One entry per weight that some forward projection uses, in plan
    /// order:
    /// `(weight name, non-zero, total)`; `non-zero / total` is the fraction of inputs
    /// that spiked. What a calibration run measures (the compiler's `sparse = auto`).
    pub fn projection_input_rates(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
    ) -> Result<Vec<(String, u64, u64)>> {
        let mut used = vec![false; self.plan.plan().weights.len()];
        fn mark(ops: &[Op], used: &mut [bool]) {
            for op in ops {
                match op {
                    Op::Gemm(Gemm { w, .. }) | Op::Conv2d(Conv2d { w, .. }) => used[*w] = true,
                    Op::StepLoop { body } => mark(body, used),
                    _ => {}
                }
            }
        }
        mark(&self.plan.plan().ops, &mut used);
        let counts = RefCell::new(vec![(0u64, 0u64); self.plan.plan().weights.len()]);
        self.run_probed(inputs, t, batch, Some(&counts))?;
        Ok(counts
            .into_inner()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| used[*i])
            .map(|(i, (nz, n))| (self.plan.plan().weights[i].name.clone(), nz, n))
            .collect())
    }

    fn run_probed(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
        probe: Option<&RefCell<Vec<(u64, u64)>>>,
    ) -> Result<Vec<(OutputDecl, Tensor)>> {
        self.load_inputs(inputs, t, batch)?;
        self.interpret(Pass::Forward, t, batch, probe)?;
        self.device.sync()?;
        self.download_outputs(t, batch)
    }

    /// Checks `inputs` against the plan, sizes the slots for `(t, batch)` (within the
    /// budget) and uploads the inputs: everything a forward pass needs first.
    fn load_inputs(&mut self, inputs: &[Tensor], t: usize, batch: usize) -> Result<()> {
        if t == 0 || batch == 0 {
            return Err(RuntimeError::InvalidArgument(format!(
                "run needs t >= 1 and batch >= 1 (got t = {t}, batch = {batch})"
            )));
        }
        if inputs.len() != self.plan.plan().inputs.len() {
            return Err(RuntimeError::InputCount {
                expected: self.plan.plan().inputs.len(),
                found: inputs.len(),
                names: self
                    .plan
                    .plan()
                    .inputs
                    .iter()
                    .map(|i| i.name.clone())
                    .collect(),
            });
        }
        for (i, (x, d)) in inputs.iter().zip(&self.plan.plan().inputs).enumerate() {
            let expected = self.input_shape(i, t, batch).unwrap_or_default();
            if x.shape != expected {
                return Err(RuntimeError::InputShape {
                    name: d.name.clone(),
                    expected,
                    found: x.shape.clone(),
                    time_varying: d.time_varying,
                });
            }
            x.validate()?;
        }

        // Sized before anything is allocated, whenever the sizes change (an overflow is over
        // budget too).
        let sizes = self.slot_sizes(t, batch);
        if sizes.as_ref().ok() != self.slot_sizes.as_ref() {
            self.footprint(t, batch).check(&self.budget)?;
        }
        let sizes = sizes?;
        if self.slot_sizes.as_ref() != Some(&sizes) {
            self.device.alloc_slots(&sizes)?;
            self.slot_sizes = Some(sizes);
        }
        for (x, d) in inputs.iter().zip(&self.plan.plan().inputs) {
            let slot = self.plan.plan().buffers[d.buffer].slot;
            self.device.upload(Loc::new(slot, 0), &x.data)?;
        }
        Ok(())
    }

    /// Every output of the last forward pass, downloaded.
    fn download_outputs(&mut self, t: usize, batch: usize) -> Result<Vec<(OutputDecl, Tensor)>> {
        let mut out = Vec::with_capacity(self.plan.plan().outputs.len());
        for o in &self.plan.plan().outputs {
            let b = &self.plan.plan().buffers[o.buffer];
            let mut shape = match o.kind {
                OutputKind::Spikes | OutputKind::Trace => vec![t, batch],
                OutputKind::Counts => vec![batch],
            };
            shape.extend(&o.shape);
            let mut data = vec![0.0; buffer_len(b, t, batch)?];
            self.device.download(Loc::new(b.slot, 0), &mut data)?;
            out.push((o.clone(), Tensor { shape, data }));
        }
        Ok(out)
    }

    /// Walk the plan's ops again on the inputs already in device memory, without copying
    /// inputs in or outputs out: what benchmarks time. Needs a previous [`Session::run`]
    /// with the same `t` and `batch`.
    pub fn rerun(&mut self, t: usize, batch: usize) -> Result<()> {
        let sizes = self.slot_sizes(t, batch)?;
        if self.slot_sizes.as_ref() != Some(&sizes) {
            return Err(RuntimeError::InvalidArgument(format!(
                "rerun(t = {t}, batch = {batch}) needs a previous run with the same sizes"
            )));
        }
        self.interpret(Pass::Forward, t, batch, None)?;
        self.device.sync()
    }

    /// Runs the backward ops of a training plan after a [`Session::run`] with the same `t`
    /// and `batch`: `loss_grads` holds dLoss/d(output) for the loss and each regulariser
    /// (same order as [`TrainPlan::loss`] then [`TrainPlan::regularizers`], each laid out
    /// like its output). Afterwards [`Session::grads`] returns the weight gradients.
    pub fn backward(&mut self, loss_grads: &[&[f32]], t: usize, batch: usize) -> Result<()> {
        let Some(tp) = &self.plan.plan().train else {
            return Err(RuntimeError::InvalidArgument(
                "this plan was not compiled for training (it has no backward pass)".into(),
            ));
        };
        let sizes = self.slot_sizes(t, batch)?;
        if self.slot_sizes.as_ref() != Some(&sizes) {
            return Err(RuntimeError::InvalidArgument(format!(
                "backward(t = {t}, batch = {batch}) needs a previous run with the same sizes"
            )));
        }
        let targets: Vec<BufId> = std::iter::once(tp.loss.grad)
            .chain(tp.regularizers.iter().map(|r| r.grad))
            .collect();
        if loss_grads.len() != targets.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "backward needs {} gradient tensors (loss and regularisers), got {}",
                targets.len(),
                loss_grads.len()
            )));
        }
        for (&buf, g) in targets.iter().zip(loss_grads) {
            let d = &self.plan.plan().buffers[buf];
            let len = buffer_len(d, t, batch)?;
            if g.len() != len {
                return Err(RuntimeError::InvalidArgument(format!(
                    "gradient for `{}` has {} elements, expected {len}",
                    d.name,
                    g.len()
                )));
            }
            self.device.upload(Loc::new(d.slot, 0), g)?;
        }
        self.device.zero_grads()?;
        self.interpret(Pass::Backward, t, batch, None)?;
        self.device.sync()
    }

    /// dLoss/d(input) of the last [`Session::backward`] for the input named `name`, shaped
    /// like the input (`[T, B, ..]` or `[B, ..]`); the model must be compiled with
    /// `input_grads = true` in its `train { }` block.
    pub fn input_grad(&mut self, name: &str, t: usize, batch: usize) -> Result<Tensor> {
        let tp = self.plan.plan().train.as_ref().ok_or_else(|| {
            RuntimeError::InvalidArgument("this plan was not compiled for training".into())
        })?;
        let Some(i) = self.plan.plan().inputs.iter().position(|x| x.name == name) else {
            return Err(RuntimeError::InvalidArgument(format!(
                "no input named `{name}`"
            )));
        };
        let Some(&(_, g)) = tp.input_grads.iter().find(|(j, _)| *j == i) else {
            return Err(RuntimeError::InvalidArgument(format!(
                "no gradient of input `{name}`: add `input_grads = true` to the `train {{ }}` \
                 block (inputs that only feed spike encoders have none)"
            )));
        };
        let shape = self.input_shape(i, t, batch).expect("the input exists");
        let d = &self.plan.plan().buffers[g];
        let mut data = vec![0.0; buffer_len(d, t, batch)?];
        self.device.download(Loc::new(d.slot, 0), &mut data)?;
        Ok(Tensor { shape, data })
    }

    /// The weight gradients of the last [`Session::backward`], one per plan weight.
    pub fn grads(&mut self) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.plan.plan().weights.len());
        for (i, w) in self.plan.plan().weights.iter().enumerate() {
            let mut g = vec![0.0; w.numel()];
            self.device.get_grad(i, &mut g)?;
            out.push(g);
        }
        Ok(out)
    }

    /// One step of local learning: a forward pass on `inputs` (as [`Session::run`], whose
    /// outputs it returns), then every enabled learn layer's rule ([`crate::op::plastic`])
    /// on the batch's spikes, in plan order. The weights change on the device; the host
    /// copies go stale as after optimizer steps (see [`Session::weights`]).
    pub fn learn(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
    ) -> Result<Vec<(OutputDecl, Tensor)>> {
        if self.plan.plan().learn.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "this plan has no plastic projection (no `synapse = ...`)".into(),
            ));
        }
        let outputs = self.run(inputs, t, batch)?;
        self.apply_rules(t, batch)?;
        Ok(outputs)
    }

    /// One step of local learning without outputs: the forward pass only as far as the
    /// enabled learn layers read (`LearnLayer::forward_ops`: training layer 1 of a deep net
    /// skips the layers after it), then their rules. The same weights as
    /// [`Session::learn`], faster; what the outputs would hold is not computed.
    pub fn learn_step(&mut self, inputs: &[Tensor], t: usize, batch: usize) -> Result<()> {
        self.forward_for_rules(inputs, t, batch)?;
        self.apply_rules(t, batch)
    }

    /// The forward prefix the enabled learn layers read (see [`Session::learn_step`]).
    fn forward_for_rules(&mut self, inputs: &[Tensor], t: usize, batch: usize) -> Result<()> {
        let learn = &self.plan.plan().learn;
        if learn.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "this plan has no plastic projection (no `synapse = ...`)".into(),
            ));
        }
        let n = (learn.iter().zip(&self.learning))
            .filter(|(_, on)| **on)
            .map(|(l, _)| l.forward_ops)
            .max()
            .unwrap_or(0);
        self.load_inputs(inputs, t, batch)?;
        let runner = Runner {
            dev: self.device.as_mut(),
            plan: self.plan.plan(),
            weights: &self.weights,
            params: &self.params,
            t_len: t,
            batch,
            step: None,
            probe: None,
        };
        interp::run_forward_prefix(&self.plan, n, runner)?;
        self.device.sync()
    }

    /// [`Session::learn_step`] for a rule rewarded by the decision of its own gate (R-STDP):
    /// after the forward pass (as far as the enabled rules read), `reward` reads the gate of
    /// projection `layer` (`[B, post]`, non-zero at the winners) and returns one value per
    /// sample, which replaces the layer's `reward` input before the rules run.
    pub fn learn_rewarded(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
        layer: &str,
        reward: impl FnOnce(&[f32]) -> Vec<f32>,
    ) -> Result<()> {
        let l = &self.plan.plan().learn[self.learn_layer(layer)?];
        let (Some(gate), Some(slot)) = (l.gate, l.reward) else {
            return Err(RuntimeError::InvalidArgument(format!(
                "`{layer}` needs a gate and a `reward` input to be rewarded by its decision"
            )));
        };
        let (gate, slot) = (
            &self.plan.plan().buffers[gate],
            &self.plan.plan().buffers[slot],
        );
        let (gate_loc, gate_len) = (Loc::new(gate.slot, 0), buffer_len(gate, t, batch)?);
        let reward_loc = Loc::new(slot.slot, 0);
        self.forward_for_rules(inputs, t, batch)?;
        let mut winners = vec![0.0; gate_len];
        self.device.download(gate_loc, &mut winners)?;
        let r = reward(&winners);
        if r.len() != batch {
            return Err(RuntimeError::InvalidArgument(format!(
                "the reward of `{layer}` has {} values for a batch of {batch}",
                r.len()
            )));
        }
        self.device.upload(reward_loc, &r)?;
        self.apply_rules(t, batch)
    }

    /// Runs the enabled rules on the spikes of the last run (same `t` and `batch`), without
    /// a forward pass: [`Session::learn`]'s second half.
    pub fn apply_rules(&mut self, t: usize, batch: usize) -> Result<()> {
        let sizes = self.slot_sizes(t, batch)?;
        if self.slot_sizes.as_ref() != Some(&sizes) {
            return Err(RuntimeError::InvalidArgument(format!(
                "apply_rules(t = {t}, batch = {batch}) needs a run with the same sizes first"
            )));
        }
        let plan = self.plan.plan();
        let loc = |b: BufId| Loc::new(plan.buffers[b].slot, 0);
        for (i, l) in plan.learn.iter().enumerate() {
            if !self.learning[i] {
                continue;
            }
            self.device.plastic(&PlasticDesc {
                kernel: l.kernel,
                weight: l.weight,
                geom: l.geom,
                t_len: t,
                batch,
                pre: loc(l.pre),
                post: loc(l.post),
                gate: l.gate.map(loc),
                reward: l.reward.map(loc),
                states: &l.states,
                params: &self.rule_params[i],
            })?;
        }
        self.device.sync()?;
        self.weights_stale = true;
        for &i in &self.plan.info().host_reads {
            self.device.get_weight(i, &mut self.weights[i])?;
        }
        Ok(())
    }

    /// The learn layer of projection `layer` (its name in the model).
    fn learn_layer(&self, layer: &str) -> Result<usize> {
        let learn = &self.plan.plan().learn;
        learn.iter().position(|l| l.name == layer).ok_or_else(|| {
            let names: Vec<&str> = learn.iter().map(|l| l.name.as_str()).collect();
            RuntimeError::InvalidArgument(format!(
                "`{layer}` is not a plastic projection (plastic: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    /// Whether [`Session::learn`] runs the rule of projection `layer` (layer-wise training
    /// freezes the others).
    pub fn set_learning(&mut self, layer: &str, on: bool) -> Result<()> {
        let i = self.learn_layer(layer)?;
        self.learning[i] = on;
        Ok(())
    }

    /// Parameter `name` of the rule of projection `layer`, as set now.
    pub fn rule_param(&self, layer: &str, name: &str) -> Result<f64> {
        let i = self.learn_layer(layer)?;
        let l = &self.plan.plan().learn[i];
        let j = l
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "rule `{}` of `{layer}` has no parameter `{name}`",
                    l.rule
                ))
            })?;
        Ok(self.rule_params[i][j])
    }

    /// Sets parameter `name` of the rule of projection `layer` (f64, finite): a learning
    /// rate schedule, R-STDP's adaptive rates.
    pub fn set_rule_param(&mut self, layer: &str, name: &str, value: f64) -> Result<()> {
        let i = self.learn_layer(layer)?;
        let l = &self.plan.plan().learn[i];
        let j = l
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "rule `{}` of `{layer}` has no parameter `{name}`",
                    l.rule
                ))
            })?;
        if !value.is_finite() {
            return Err(RuntimeError::InvalidArgument(format!(
                "rule parameter `{layer}.{name}` must be finite, got {value}"
            )));
        }
        self.rule_params[i][j] = value;
        Ok(())
    }

    /// All weights, in plan order (the host copy). After optimizer steps on the device
    /// ([`Session::apply_updates`], [`crate::train::Trainer::step`]) it is up to date only
    /// once [`Session::sync_weights`] has run ([`Session::save_weights`] refuses stale
    /// weights; `Trainer::save_checkpoint` syncs itself).
    pub fn weights(&self) -> &[Vec<f32>] {
        &self.weights
    }

    /// Whether the host copies of the weights are older than the device's (see
    /// [`Session::weights`]).
    pub fn weights_stale(&self) -> bool {
        self.weights_stale
    }

    /// Brings the host copies of the weights up to date with the device after optimizer
    /// steps on it (a no-op otherwise).
    pub fn sync_weights(&mut self) -> Result<()> {
        if self.weights_stale {
            for (i, w) in self.weights.iter_mut().enumerate() {
                self.device.get_weight(i, w)?;
            }
            self.weights_stale = false;
        }
        Ok(())
    }

    /// The total 2-norm of all weight gradients of the last [`Session::backward`] (torch
    /// `clip_grad_norm_`'s norm: squares summed in f64 tensor after tensor, on the device).
    pub fn grad_norm(&mut self) -> Result<f32> {
        let acc = self.device.grad_sq_total(self.plan.plan().weights.len())?;
        Ok(acc.sqrt() as f32)
    }

    /// One optimizer update of every weight where it lives, `updates[i]` for weight `i`
    /// ([`crate::train::optim::Optimizer::next_update`]), the gradients times `grad_scale`
    /// when given. The host copies go stale (see [`Session::weights`]) except the weights
    /// the executor reads on the host, which are downloaded.
    pub fn apply_updates(
        &mut self,
        updates: &[crate::train::optim::Update],
        grad_scale: Option<f32>,
    ) -> Result<()> {
        if updates.len() != self.plan.plan().weights.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "apply_updates: {} updates for {} weights",
                updates.len(),
                self.plan.plan().weights.len()
            )));
        }
        for (i, u) in updates.iter().enumerate() {
            // A frozen weight has no gradient and is never decayed.
            if self.plan.plan().weights[i].frozen() {
                continue;
            }
            self.device.optim_step(i, u, grad_scale)?;
        }
        self.weights_stale = true;
        for &i in &self.plan.info().host_reads {
            self.device.get_weight(i, &mut self.weights[i])?;
        }
        Ok(())
    }

    /// The optimizer state the device holds for weight `i` (`(buf, sq)`: the momentum
    /// buffer or Adam's moments; empty when it holds none), for a checkpoint.
    pub fn optim_state(&mut self, i: WeightId) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = self.plan.plan().weights[i].numel();
        let mut out = (vec![0.0; n], vec![0.0; n]);
        if !self.device.get_optim_state(i, 0, &mut out.0)? {
            out.0.clear();
        }
        if !self.device.get_optim_state(i, 1, &mut out.1)? {
            out.1.clear();
        }
        Ok(out)
    }

    /// Gives the device the optimizer state of weight `i` (a checkpoint's; empty buffers
    /// are skipped).
    pub fn set_optim_state(&mut self, i: WeightId, buf: &[f32], sq: &[f32]) -> Result<()> {
        for (k, b) in [buf, sq].into_iter().enumerate() {
            if !b.is_empty() {
                self.device.set_optim_state(i, k, b)?;
            }
        }
        Ok(())
    }

    /// Replaces all weights at once (an optimizer step); shapes must match.
    pub fn set_all_weights(&mut self, new: Vec<Vec<f32>>) -> Result<()> {
        if new.len() != self.weights.len()
            || new
                .iter()
                .zip(&self.weights)
                .any(|(a, b)| a.len() != b.len())
        {
            return Err(RuntimeError::InvalidArgument(
                "set_all_weights: the number or sizes of the tensors differ from the plan".into(),
            ));
        }
        for (i, w) in new.iter().enumerate() {
            self.device.set_weight(i, w)?;
        }
        self.weights = new;
        self.weights_stale = false;
        Ok(())
    }

    /// [`Session::run`] returning only the output named `name`.
    pub fn run_output(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
        name: &str,
    ) -> Result<Tensor> {
        if !self.plan.plan().outputs.iter().any(|o| o.name == name) {
            return Err(RuntimeError::InvalidArgument(format!(
                "the model has no output `{name}`; its outputs are: {}",
                self.plan
                    .plan()
                    .outputs
                    .iter()
                    .map(|o| format!("`{}`", o.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let outs = self.run(inputs, t, batch)?;
        Ok(outs
            .into_iter()
            .find(|(o, _)| o.name == name)
            .map(|(_, t)| t)
            .unwrap_or_default())
    }
}

impl Session {
    /// Runs the forward or backward ops on the device.
    fn interpret(
        &mut self,
        pass: Pass,
        t: usize,
        batch: usize,
        probe: Option<&RefCell<Vec<(u64, u64)>>>,
    ) -> Result<()> {
        let runner = Runner {
            dev: self.device.as_mut(),
            plan: self.plan.plan(),
            weights: &self.weights,
            params: &self.params,
            t_len: t,
            batch,
            step: None,
            probe,
        };
        interp::run(&self.plan, pass, runner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_send() {
        fn send<T: Send>() {}
        send::<Session>();
        send::<KernelTable>();
    }
}
