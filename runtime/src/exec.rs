//! The plan executor: a [`Session`] owns a validated plan, a device (with the plan's kernels),
//! the weights and the flat parameter array, and runs the plan on input tensors.
//!
//! The executor resolves each op's time selection into plain row offsets and row counts and
//! hands the device dense primitives; it never looks inside a kernel. Parameters live in one
//! flat `f32` array the kernels read at run time, so changing a parameter never needs a
//! recompilation.

use crate::cpu::CpuDevice;
use crate::device::{
    ConvDesc, ConvDwDesc, ConvDxDesc, Device, GemmDesc, GemmDwDesc, GemmDxDesc, GroupDesc,
    LaunchDesc, Loc, PoolDesc, PoolDxDesc, TimeMixDesc, TimeMixDwDesc, WeightArg,
};
use crate::error::{fmt_shape, Result, RuntimeError};
use crate::io::weights;
use crate::kernels::KernelTable;
use crate::plan::*;
use crate::rng;
use crate::tensor::{numel, Tensor};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// An op with its launch groups resolved to slots.
#[derive(Clone, Debug)]
enum Exec {
    Zero {
        buf: BufId,
    },
    Gemm {
        x: BufId,
        w: WeightId,
        bias: Option<WeightId>,
        y: BufId,
        k: usize,
        n: usize,
        time: TimeSel,
        accumulate: bool,
        sparse: bool,
    },
    Conv2d {
        x: BufId,
        w: WeightId,
        bias: Option<WeightId>,
        y: BufId,
        geom: ConvGeom,
        time: TimeSel,
        accumulate: bool,
        sparse: bool,
    },
    Pool2d {
        x: BufId,
        y: BufId,
        kind: PoolKind,
        geom: PoolGeom,
        time: TimeSel,
    },
    Launch {
        kernel: KernelId,
        groups: Vec<GroupDesc>,
        time: LaunchTime,
    },
    StepLoop {
        body: Vec<Exec>,
        /// `t = T-1 .. 0` (the backward of a step loop).
        reverse: bool,
    },
    TimeMix {
        x: BufId,
        y: BufId,
        matrix: TimeMatrix,
        bias: Option<TimeBias>,
        time: TimeSel,
        accumulate: bool,
    },
    TimeMixDx {
        dy: BufId,
        dx: BufId,
        matrix: TimeMatrix,
        accumulate: bool,
    },
    TimeMixDw {
        x: BufId,
        dy: BufId,
        matrix: TimeMatrix,
        bias: Option<TimeBias>,
    },
    GemmDx {
        dy: BufId,
        w: WeightId,
        dx: BufId,
        k: usize,
        n: usize,
        time: TimeSel,
        accumulate: bool,
    },
    GemmDw {
        x: BufId,
        dy: BufId,
        w: WeightId,
        bias: Option<WeightId>,
        k: usize,
        n: usize,
        time: TimeSel,
        sparse: bool,
    },
    Conv2dDx {
        dy: BufId,
        w: WeightId,
        dx: BufId,
        geom: ConvGeom,
        time: TimeSel,
        accumulate: bool,
    },
    Conv2dDw {
        x: BufId,
        dy: BufId,
        w: WeightId,
        bias: Option<WeightId>,
        geom: ConvGeom,
        time: TimeSel,
        sparse: bool,
    },
    Pool2dDx {
        x: BufId,
        dy: BufId,
        dx: BufId,
        kind: PoolKind,
        geom: PoolGeom,
        time: TimeSel,
        accumulate: bool,
    },
}

/// Rows an op touches: `count` blocks of `rows` rows; block `i` reads at element offset
/// `x0 + i * xs` and writes at `y0 + i * ys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    count: usize,
    rows: usize,
    x0: usize,
    xs: usize,
    y0: usize,
    ys: usize,
}

/// Resolves a time selection for source `x` and destination `y` (validated extents).
/// `None`: nothing to do.
fn span(
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
    match time {
        TimeSel::All { delay } => {
            if yseq && delay >= t_len {
                return None;
            }
            match (xseq, yseq) {
                (true, true) => Some(Span {
                    count: 1,
                    rows: (t_len - delay) * b,
                    x0: 0,
                    xs: 0,
                    y0: delay * yrow,
                    ys: 0,
                }),
                (false, true) => Some(Span {
                    count: t_len - delay,
                    rows: b,
                    x0: 0,
                    xs: 0,
                    y0: delay * yrow,
                    ys: yrow,
                }),
                // Validated: delay 0, no Seq -> non-Seq.
                _ => Some(Span {
                    count: 1,
                    rows: b,
                    x0: 0,
                    xs: 0,
                    y0: 0,
                    ys: 0,
                }),
            }
        }
        TimeSel::Step { delay } => {
            let t = step.unwrap_or(0);
            if t < delay {
                return None;
            }
            Some(Span {
                count: 1,
                rows: b,
                x0: if xseq { (t - delay) * xrow } else { 0 },
                xs: 0,
                y0: if yseq { t * yrow } else { 0 },
                ys: 0,
            })
        }
    }
}

/// A plan ready to run: plan + device + weights + parameters.
pub struct Session {
    plan: Plan,
    exec: Vec<Exec>,
    /// Backward ops of a training plan.
    backward: Option<Vec<Exec>>,
    device: Box<dyn Device>,
    weights: Vec<Vec<f32>>,
    /// The host copies in `weights` are older than the device's, after optimizer steps on
    /// the device ([`Session::apply_updates`]), except those in `host_read`.
    weights_stale: bool,
    /// Weights the executor reads on the host (time-mixing matrices and biases, built into
    /// a matrix per call): downloaded after every optimizer step on the device.
    host_read: Vec<WeightId>,
    params: Vec<f32>,
    weight_index: HashMap<String, WeightId>,
    param_index: HashMap<String, usize>,
    slot_sizes: Option<Vec<usize>>,
}

/// The weights `ops` read on the host: time-mixing matrices and biases.
fn host_read_weights(ops: &[Exec], out: &mut Vec<WeightId>) {
    let matrix = |m: &TimeMatrix| match *m {
        TimeMatrix::Weight { w } | TimeMatrix::Masked { w, .. } | TimeMatrix::Band { w, .. } => {
            Some(w)
        }
        TimeMatrix::Response { .. } => None,
    };
    let bias = |b: &Option<TimeBias>| match *b {
        Some(TimeBias::Weight(w)) | Some(TimeBias::Scalar(w)) => Some(w),
        _ => None,
    };
    for op in ops {
        match op {
            Exec::StepLoop { body, .. } => host_read_weights(body, out),
            Exec::TimeMix {
                matrix: m, bias: b, ..
            }
            | Exec::TimeMixDw {
                matrix: m, bias: b, ..
            } => {
                out.extend(matrix(m).into_iter().chain(bias(b)));
            }
            Exec::TimeMixDx { matrix: m, .. } => out.extend(matrix(m)),
            _ => {}
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("plan", &self.plan.name)
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

    /// A session on any device (the device holds the plan's kernels).
    pub fn with_device(plan: Plan, mut device: Box<dyn Device>) -> Result<Session> {
        let (exec, backward) = validate(&plan, device.num_kernels())?;
        let weight_index = plan
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| (w.name.clone(), i))
            .collect();
        let param_index = plan
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let params: Vec<f32> = plan.params.iter().map(|p| p.value).collect();
        device.set_params(&params)?;
        let mut host_read = Vec::new();
        host_read_weights(&exec, &mut host_read);
        host_read_weights(backward.as_deref().unwrap_or(&[]), &mut host_read);
        host_read.sort_unstable();
        host_read.dedup();
        let mut s = Session {
            weights: plan.weights.iter().map(|w| vec![0.0; w.numel()]).collect(),
            weights_stale: false,
            host_read,
            plan,
            exec,
            backward,
            device,
            params,
            weight_index,
            param_index,
            slot_sizes: None,
        };
        s.init_weights(s.plan.seed)?;
        Ok(s)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The device's description.
    pub fn device_name(&self) -> String {
        self.device.name()
    }

    /// Re-initialises every weight from `seed`: `UniformFanIn { fan_in }` draws
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` from the Philox stream
    /// `(seed, weight index, rng::stream::WEIGHTS)` (see [`rng::fill_uniform01`]).
    pub fn init_weights(&mut self, seed: u64) -> Result<()> {
        for (i, decl) in self.plan.weights.iter().enumerate() {
            let w = &mut self.weights[i];
            match decl.init {
                Init::Zeros => w.fill(0.0),
                Init::Constant(v) => w.fill(v),
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
                let expected = &self.plan.weights[i].shape;
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
                let decl = &self.plan.params[i];
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
            .zip(&self.plan.weights)
            .filter(|(w, _)| w.is_none())
            .map(|(_, d)| d.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(RuntimeError::MissingTensors {
                path: path.to_path_buf(),
                names: missing,
            });
        }
        for (i, w) in new_weights.into_iter().enumerate() {
            let w = w.unwrap_or_default();
            self.device.set_weight(i, &w)?;
            self.weights[i] = w;
        }
        // Every weight was replaced (a missing one is an error above): host and device agree.
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
        for (d, w) in self.plan.weights.iter().zip(&self.weights) {
            list.push((d.name.clone(), d.shape.clone(), w));
        }
        for (i, d) in self.plan.params.iter().enumerate() {
            list.push((d.name.clone(), vec![1], &self.params[i..i + 1]));
        }
        weights::save(path, &list)
    }

    fn known_tensor_names(&self) -> Vec<String> {
        self.plan
            .weights
            .iter()
            .map(|w| w.name.clone())
            .chain(self.plan.params.iter().map(|p| p.name.clone()))
            .collect()
    }

    /// A parameter's current value.
    pub fn param(&self, name: &str) -> Option<f32> {
        self.param_index.get(name).map(|&i| self.params[i])
    }

    /// `(name, value)` of every parameter, in plan order.
    pub fn params(&self) -> Vec<(&str, f32)> {
        self.plan
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
                known: self.plan.params.iter().map(|p| p.name.clone()).collect(),
            })?;
        let check = self.plan.params[i].check;
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
                known: self.plan.weights.iter().map(|w| w.name.clone()).collect(),
            })?;
        let decl = &self.plan.weights[i];
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
        let d = self.plan.inputs.get(i)?;
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
    pub fn random_inputs(&self, t: usize, batch: usize, seed: u64) -> Vec<Tensor> {
        (0..self.plan.inputs.len())
            .map(|i| {
                let shape = self.input_shape(i, t, batch).unwrap_or_default();
                let mut x = Tensor::zeros(&shape);
                rng::fill_uniform01(&mut x.data, seed, i as u32, rng::stream::INPUTS);
                x
            })
            .collect()
    }

    /// Slot sizes (elements) for `(t, batch)`.
    pub fn slot_sizes(&self, t: usize, batch: usize) -> Result<Vec<usize>> {
        let mut sizes = vec![0usize; self.plan.slots];
        for b in &self.plan.buffers {
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
        let mut used = vec![false; self.plan.weights.len()];
        fn mark(ops: &[Op], used: &mut [bool]) {
            for op in ops {
                match op {
                    Op::Gemm { w, .. } | Op::Conv2d { w, .. } => used[*w] = true,
                    Op::StepLoop { body } => mark(body, used),
                    _ => {}
                }
            }
        }
        mark(&self.plan.ops, &mut used);
        let counts = RefCell::new(vec![(0u64, 0u64); self.plan.weights.len()]);
        self.run_probed(inputs, t, batch, Some(&counts))?;
        Ok(counts
            .into_inner()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| used[*i])
            .map(|(i, (nz, n))| (self.plan.weights[i].name.clone(), nz, n))
            .collect())
    }

    fn run_probed(
        &mut self,
        inputs: &[Tensor],
        t: usize,
        batch: usize,
        probe: Option<&RefCell<Vec<(u64, u64)>>>,
    ) -> Result<Vec<(OutputDecl, Tensor)>> {
        if t == 0 || batch == 0 {
            return Err(RuntimeError::InvalidArgument(format!(
                "run needs t >= 1 and batch >= 1 (got t = {t}, batch = {batch})"
            )));
        }
        if inputs.len() != self.plan.inputs.len() {
            return Err(RuntimeError::InputCount {
                expected: self.plan.inputs.len(),
                found: inputs.len(),
                names: self.plan.inputs.iter().map(|i| i.name.clone()).collect(),
            });
        }
        for (i, (x, d)) in inputs.iter().zip(&self.plan.inputs).enumerate() {
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

        let sizes = self.slot_sizes(t, batch)?;
        if self.slot_sizes.as_ref() != Some(&sizes) {
            self.device.alloc_slots(&sizes)?;
            self.slot_sizes = Some(sizes);
        }
        for (x, d) in inputs.iter().zip(&self.plan.inputs) {
            let slot = self.plan.buffers[d.buffer].slot;
            self.device.upload(Loc::new(slot, 0), &x.data)?;
        }
        let cx = Cx {
            plan: &self.plan,
            weights: &self.weights,
            params: &self.params,
            probe,
        };
        exec_ops(self.device.as_mut(), &cx, &self.exec, t, batch, None)?;
        self.device.sync()?;

        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for o in &self.plan.outputs {
            let b = &self.plan.buffers[o.buffer];
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
        let cx = Cx {
            plan: &self.plan,
            weights: &self.weights,
            params: &self.params,
            probe: None,
        };
        exec_ops(self.device.as_mut(), &cx, &self.exec, t, batch, None)?;
        self.device.sync()
    }

    /// Runs the backward ops of a training plan after a [`Session::run`] with the same `t`
    /// and `batch`: `loss_grads` holds dLoss/d(output) for the loss and each regulariser
    /// (same order as [`TrainPlan::loss`] then [`TrainPlan::regularizers`], each laid out
    /// like its output). Afterwards [`Session::grads`] returns the weight gradients.
    pub fn backward(&mut self, loss_grads: &[&[f32]], t: usize, batch: usize) -> Result<()> {
        let (Some(tp), Some(bw)) = (&self.plan.train, &self.backward) else {
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
            let d = &self.plan.buffers[buf];
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
        let cx = Cx {
            plan: &self.plan,
            weights: &self.weights,
            params: &self.params,
            probe: None,
        };
        exec_ops(self.device.as_mut(), &cx, bw, t, batch, None)?;
        self.device.sync()
    }

    /// dLoss/d(input) of the last [`Session::backward`] for the input named `name`, shaped
    /// like the input (`[T, B, ..]` or `[B, ..]`); the model must be compiled with
    /// `input_grads = true` in its `train { }` block.
    pub fn input_grad(&mut self, name: &str, t: usize, batch: usize) -> Result<Tensor> {
        let tp = self.plan.train.as_ref().ok_or_else(|| {
            RuntimeError::InvalidArgument("this plan was not compiled for training".into())
        })?;
        let Some(i) = self.plan.inputs.iter().position(|x| x.name == name) else {
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
        let d = &self.plan.buffers[g];
        let mut data = vec![0.0; buffer_len(d, t, batch)?];
        self.device.download(Loc::new(d.slot, 0), &mut data)?;
        Ok(Tensor { shape, data })
    }

    /// The weight gradients of the last [`Session::backward`], one per plan weight.
    pub fn grads(&mut self) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.plan.weights.len());
        for (i, w) in self.plan.weights.iter().enumerate() {
            let mut g = vec![0.0; w.numel()];
            self.device.get_grad(i, &mut g)?;
            out.push(g);
        }
        Ok(out)
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
        let acc = self.device.grad_sq_total(self.plan.weights.len())?;
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
        if updates.len() != self.plan.weights.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "apply_updates: {} updates for {} weights",
                updates.len(),
                self.plan.weights.len()
            )));
        }
        for (i, u) in updates.iter().enumerate() {
            self.device.optim_step(i, u, grad_scale)?;
        }
        self.weights_stale = true;
        for &i in &self.host_read {
            self.device.get_weight(i, &mut self.weights[i])?;
        }
        Ok(())
    }

    /// The optimizer state the device holds for weight `i` (`(buf, sq)`: the momentum
    /// buffer or Adam's moments; empty when it holds none), for a checkpoint.
    pub fn optim_state(&mut self, i: WeightId) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = self.plan.weights[i].numel();
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
        if !self.plan.outputs.iter().any(|o| o.name == name) {
            return Err(RuntimeError::InvalidArgument(format!(
                "the model has no output `{name}`; its outputs are: {}",
                self.plan
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

fn buffer_len(b: &BufferDecl, t: usize, batch: usize) -> Result<usize> {
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

/// What the executor reads besides the device: the plan, and the host copies of the
/// weights and parameters (a [`TimeMatrix`] is built on the host from them).
struct Cx<'a> {
    plan: &'a Plan,
    weights: &'a [Vec<f32>],
    params: &'a [f32],
    /// A calibration run: per weight, the non-zero and total input elements its forward
    /// `Gemm`s read (see [`Session::projection_input_rates`]).
    probe: Option<&'a RefCell<Vec<(u64, u64)>>>,
}

impl Cx<'_> {
    /// A `[T0, T0]` weight or bias used at `t_len` steps: only `t_len == T0` is defined.
    fn check_steps(&self, w: WeightId, n: usize, t_len: usize) -> Result<()> {
        if n != t_len {
            return Err(RuntimeError::InvalidArgument(format!(
                "weight `{}` mixes {n} time steps: this model runs only at T = {n}, not T = {t_len} \
                 (a SlidingPSN runs at any T)",
                self.plan.weights[w].name
            )));
        }
        Ok(())
    }

    /// The first column (`(n, 0, 0)` for `n < t_len`) of a `Seq` buffer with one feature.
    fn column(&self, dev: &mut dyn Device, r: BufId, t_len: usize, b: usize) -> Result<Vec<f32>> {
        let d = &self.plan.buffers[r];
        let mut data = vec![0.0; buffer_len(d, t_len, b)?];
        dev.download(Loc::new(d.slot, 0), &mut data)?;
        Ok((0..t_len).map(|n| data[n * b * d.features]).collect())
    }

    /// Row `t` of the matrix, columns `0..t_len`.
    fn matrix_rows(
        &self,
        dev: &mut dyn Device,
        m: &TimeMatrix,
        rows: std::ops::Range<usize>,
        t_len: usize,
        b: usize,
    ) -> Result<Vec<f32>> {
        let mut a = vec![0.0f32; rows.len() * t_len];
        let w = |id: WeightId| self.weights[id].as_slice();
        let response = match m {
            TimeMatrix::Response { r } => Some(self.column(dev, *r, t_len, b)?),
            _ => None,
        };
        for (i, t) in rows.enumerate() {
            let row = &mut a[i * t_len..(i + 1) * t_len];
            match *m {
                TimeMatrix::Weight { w: id } => {
                    self.check_steps(id, self.plan.weights[id].shape[0], t_len)?;
                    row.copy_from_slice(&w(id)[t * t_len..(t + 1) * t_len]);
                }
                TimeMatrix::Masked { w: id, k, lambda } => {
                    self.check_steps(id, self.plan.weights[id].shape[0], t_len)?;
                    let l = self.params[lambda];
                    let src = &w(id)[t * t_len..(t + 1) * t_len];
                    for (j, v) in row.iter_mut().enumerate() {
                        // SpikingJelly: lambda >= 1 is the plain band (weight * mask0).
                        let band = if j <= t && t - j < k { 1.0f32 } else { 0.0 };
                        *v = if l >= 1.0 {
                            src[j] * band
                        } else {
                            (l * band + (1.0 - l)) * src[j]
                        };
                    }
                }
                TimeMatrix::Band { w: id, k } => {
                    let wv = w(id);
                    for d in 0..k.min(t + 1) {
                        row[t - d] = wv[k - 1 - d];
                    }
                }
                TimeMatrix::Response { .. } => {
                    let r = response.as_deref().unwrap_or(&[]);
                    for j in 0..=t {
                        row[j] = r[t - j];
                    }
                }
            }
        }
        Ok(a)
    }

    fn bias_rows(
        &self,
        dev: &mut dyn Device,
        bias: &TimeBias,
        rows: std::ops::Range<usize>,
        t_len: usize,
        b: usize,
    ) -> Result<Vec<f32>> {
        Ok(match *bias {
            TimeBias::Weight(id) => {
                self.check_steps(id, self.weights[id].len(), t_len)?;
                self.weights[id][rows].to_vec()
            }
            TimeBias::Scalar(id) => vec![self.weights[id][0]; rows.len()],
            TimeBias::Response(r) => self.column(dev, r, t_len, b)?[rows].to_vec(),
        })
    }
}

fn exec_ops(
    dev: &mut dyn Device,
    cx: &Cx<'_>,
    ops: &[Exec],
    t_len: usize,
    b: usize,
    step: Option<usize>,
) -> Result<()> {
    let bufs = &cx.plan.buffers;
    for op in ops {
        match op {
            Exec::Zero { buf } => {
                let d = &bufs[*buf];
                dev.zero(Loc::new(d.slot, 0), buffer_len(d, t_len, b)?)?;
            }
            Exec::Gemm {
                x,
                w,
                bias,
                y,
                k,
                n,
                time,
                accumulate,
                sparse,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*y]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        if let Some(p) = cx.probe {
                            let len = s.rows * k;
                            let nz = dev.count_nonzero(Loc::new(xd.slot, s.x0 + i * s.xs), len)?;
                            let c = &mut p.borrow_mut()[*w];
                            c.0 += nz as u64;
                            c.1 += len as u64;
                        }
                        dev.gemm(&GemmDesc {
                            rows: s.rows,
                            k: *k,
                            n: *n,
                            x: Loc::new(xd.slot, s.x0 + i * s.xs),
                            y: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            bias: *bias,
                            accumulate: *accumulate,
                            sparse: *sparse,
                        })?;
                    }
                }
            }
            Exec::Conv2d {
                x,
                w,
                bias,
                y,
                geom,
                time,
                accumulate,
                sparse,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*y]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        if let Some(p) = cx.probe {
                            let len = s.rows * geom.c_in * geom.h * geom.w;
                            let nz = dev.count_nonzero(Loc::new(xd.slot, s.x0 + i * s.xs), len)?;
                            let c = &mut p.borrow_mut()[*w];
                            c.0 += nz as u64;
                            c.1 += len as u64;
                        }
                        dev.conv2d(&ConvDesc {
                            images: s.rows,
                            x: Loc::new(xd.slot, s.x0 + i * s.xs),
                            y: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            bias: *bias,
                            geom: *geom,
                            accumulate: *accumulate,
                            sparse: *sparse,
                        })?;
                    }
                }
            }
            Exec::Pool2d {
                x,
                y,
                kind,
                geom,
                time,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*y]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.pool2d(&PoolDesc {
                            images: s.rows,
                            x: Loc::new(xd.slot, s.x0 + i * s.xs),
                            y: Loc::new(yd.slot, s.y0 + i * s.ys),
                            kind: *kind,
                            geom: *geom,
                        })?;
                    }
                }
            }
            Exec::Launch {
                kernel,
                groups,
                time,
            } => {
                dev.launch(&LaunchDesc {
                    kernel: *kernel,
                    groups,
                    time: *time,
                    t_len,
                    t_step: step.unwrap_or(0),
                    batch: b,
                })?;
            }
            Exec::StepLoop { body, reverse } => {
                for i in 0..t_len {
                    let t = if *reverse { t_len - 1 - i } else { i };
                    exec_ops(dev, cx, body, t_len, b, Some(t))?;
                }
            }
            Exec::TimeMix {
                x,
                y,
                matrix,
                bias,
                time,
                accumulate,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*y]);
                let cols = b * yd.features;
                let x_static = xd.extent != Extent::Seq;
                // Output rows, and the first input row the matrix touches.
                let (rows, j0) = match (time, step) {
                    (TimeSel::Step { .. }, Some(t)) => match matrix {
                        TimeMatrix::Band { k, .. } => (t..t + 1, (t + 1).saturating_sub(*k)),
                        _ => (t..t + 1, 0),
                    },
                    _ => (0..t_len, 0),
                };
                let full = cx.matrix_rows(dev, matrix, rows.clone(), t_len, b)?;
                let bias = match bias {
                    Some(bi) => Some(cx.bias_rows(dev, bi, rows.clone(), t_len, b)?),
                    None => None,
                };
                let ro = rows.len();
                // A static input is the same at every step: one input row, the row sums.
                let (a, ri, x0) = if x_static {
                    let sums = full.chunks(t_len).map(|r| r.iter().sum()).collect();
                    (sums, 1, 0)
                } else {
                    let ri = rows.end - j0;
                    let mut a = Vec::with_capacity(ro * ri);
                    for r in full.chunks(t_len) {
                        a.extend_from_slice(&r[j0..rows.end]);
                    }
                    (a, ri, j0 * cols)
                };
                dev.time_mix(&TimeMixDesc {
                    rows_out: ro,
                    rows_in: ri,
                    cols,
                    a: &a,
                    bias: bias.as_deref(),
                    x: Loc::new(xd.slot, x0),
                    y: Loc::new(yd.slot, rows.start * cols),
                    accumulate: *accumulate,
                })?;
            }
            Exec::TimeMixDx {
                dy,
                dx,
                matrix,
                accumulate,
            } => {
                let (yd, xd) = (&bufs[*dy], &bufs[*dx]);
                let cols = b * yd.features;
                let full = cx.matrix_rows(dev, matrix, 0..t_len, t_len, b)?;
                // A static input was read at every step through the row sums of A.
                let (a, ro) = if xd.extent != Extent::Seq {
                    (
                        full.chunks(t_len.max(1)).map(|r| r.iter().sum()).collect(),
                        1,
                    )
                } else {
                    let mut at = vec![0.0f32; t_len * t_len];
                    for t in 0..t_len {
                        for j in 0..t_len {
                            at[j * t_len + t] = full[t * t_len + j];
                        }
                    }
                    (at, t_len)
                };
                dev.time_mix(&TimeMixDesc {
                    rows_out: ro,
                    rows_in: t_len,
                    cols,
                    a: &a,
                    bias: None,
                    x: Loc::new(yd.slot, 0),
                    y: Loc::new(xd.slot, 0),
                    accumulate: *accumulate,
                })?;
            }
            Exec::TimeMixDw {
                x,
                dy,
                matrix,
                bias,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*dy]);
                let cols = b * yd.features;
                let x_static = xd.extent != Extent::Seq;
                let ri = if x_static { 1 } else { t_len };
                let band = match *matrix {
                    TimeMatrix::Band { k, .. } if !x_static => Some(k),
                    _ => None,
                };
                let mut g = vec![0.0f32; t_len * ri];
                let mut sums = bias.map(|_| vec![0.0f32; t_len]);
                dev.time_mix_dw(
                    &TimeMixDwDesc {
                        rows_out: t_len,
                        rows_in: ri,
                        cols,
                        dy: Loc::new(yd.slot, 0),
                        x: Loc::new(xd.slot, 0),
                        band,
                    },
                    &mut g,
                    sums.as_deref_mut(),
                )?;
                // G[t][j]; a static input is the same at every step j.
                let gij = |t: usize, j: usize| if x_static { g[t] } else { g[t * t_len + j] };
                match *matrix {
                    TimeMatrix::Weight { w } => {
                        cx.check_steps(w, cx.plan.weights[w].shape[0], t_len)?;
                        let d: Vec<f32> = (0..t_len * t_len)
                            .map(|i| gij(i / t_len, i % t_len))
                            .collect();
                        dev.add_grad(w, &d)?;
                    }
                    TimeMatrix::Masked { w, k, lambda } => {
                        cx.check_steps(w, cx.plan.weights[w].shape[0], t_len)?;
                        let l = cx.params[lambda];
                        let d: Vec<f32> = (0..t_len * t_len)
                            .map(|i| {
                                let (t, j) = (i / t_len, i % t_len);
                                let band = if j <= t && t - j < k { 1.0f32 } else { 0.0 };
                                let m = if l >= 1.0 { band } else { l * band + (1.0 - l) };
                                gij(t, j) * m
                            })
                            .collect();
                        dev.add_grad(w, &d)?;
                    }
                    TimeMatrix::Band { w, k } => {
                        // A[t][t - d] = w[k - 1 - d]: the sum along diagonal d.
                        let mut d = vec![0.0f32; k];
                        for (dd, o) in d.iter_mut().rev().enumerate() {
                            *o = (dd..t_len).map(|t| gij(t, t - dd)).sum();
                        }
                        dev.add_grad(w, &d)?;
                    }
                    TimeMatrix::Response { .. } => {}
                }
                match (*bias, &sums) {
                    (Some(TimeBias::Weight(bw)), Some(s)) => {
                        cx.check_steps(bw, cx.weights[bw].len(), t_len)?;
                        dev.add_grad(bw, s)?;
                    }
                    (Some(TimeBias::Scalar(bw)), Some(s)) => dev.add_grad(bw, &[s.iter().sum()])?,
                    _ => {}
                }
            }
            Exec::GemmDx {
                dy,
                w,
                dx,
                k,
                n,
                time,
                accumulate,
            } => {
                // Same row mapping as the forward GEMM: dx plays x, dy plays y.
                let (xd, yd) = (&bufs[*dx], &bufs[*dy]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.gemm_dx(&GemmDxDesc {
                            rows: s.rows,
                            k: *k,
                            n: *n,
                            dx: Loc::new(xd.slot, s.x0 + i * s.xs),
                            dy: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            accumulate: *accumulate,
                        })?;
                    }
                }
            }
            Exec::GemmDw {
                x,
                dy,
                w,
                bias,
                k,
                n,
                time,
                sparse,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*dy]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.gemm_dw(&GemmDwDesc {
                            rows: s.rows,
                            k: *k,
                            n: *n,
                            x: Loc::new(xd.slot, s.x0 + i * s.xs),
                            dy: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            bias: *bias,
                            sparse: *sparse,
                        })?;
                    }
                }
            }
            Exec::Conv2dDx {
                dy,
                w,
                dx,
                geom,
                time,
                accumulate,
            } => {
                // The forward row mapping: dx plays x, dy plays y. A static dx read by every
                // step (xs = 0, several blocks) sums the blocks.
                let (xd, yd) = (&bufs[*dx], &bufs[*dy]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.conv2d_dx(&ConvDxDesc {
                            images: s.rows,
                            dx: Loc::new(xd.slot, s.x0 + i * s.xs),
                            dy: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            geom: *geom,
                            accumulate: *accumulate || (i > 0 && s.xs == 0),
                        })?;
                    }
                }
            }
            Exec::Conv2dDw {
                x,
                dy,
                w,
                bias,
                geom,
                time,
                sparse,
            } => {
                let (xd, yd) = (&bufs[*x], &bufs[*dy]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.conv2d_dw(&ConvDwDesc {
                            images: s.rows,
                            x: Loc::new(xd.slot, s.x0 + i * s.xs),
                            dy: Loc::new(yd.slot, s.y0 + i * s.ys),
                            w: *w,
                            bias: *bias,
                            geom: *geom,
                            sparse: *sparse,
                        })?;
                    }
                }
            }
            Exec::Pool2dDx {
                x,
                dy,
                dx,
                kind,
                geom,
                time,
                accumulate,
            } => {
                // `x` has `dx`'s extent and features (validated): the same offsets.
                let (xd, yd, fd) = (&bufs[*dx], &bufs[*dy], &bufs[*x]);
                if let Some(s) = span(*time, xd, yd, t_len, b, step) {
                    for i in 0..s.count {
                        dev.pool2d_dx(&PoolDxDesc {
                            images: s.rows,
                            x: Loc::new(fd.slot, s.x0 + i * s.xs),
                            dx: Loc::new(xd.slot, s.x0 + i * s.xs),
                            dy: Loc::new(yd.slot, s.y0 + i * s.ys),
                            kind: *kind,
                            geom: *geom,
                            accumulate: *accumulate || (i > 0 && s.xs == 0),
                        })?;
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Validation

struct Checker<'a> {
    plan: &'a Plan,
    n_kernels: usize,
    /// Checking the backward ops (gradient accumulation allowed).
    backward: bool,
}

/// Product, saturating (an impossible size that fails every comparison).
fn sat(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

fn ext_name(e: Extent) -> &'static str {
    match e {
        Extent::Seq => "Seq [T, B, F]",
        Extent::Static => "Static [B, F]",
        Extent::Single => "Single [B, F]",
    }
}

impl Checker<'_> {
    fn buf(&self, id: BufId, what: &str) -> Result<&BufferDecl> {
        self.plan.buffers.get(id).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what} refers to buffer {id}, the plan has {} buffers",
                self.plan.buffers.len()
            ))
        })
    }

    fn weight(&self, id: WeightId, what: &str) -> Result<&WeightDecl> {
        self.plan.weights.get(id).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what} refers to weight {id}, the plan has {} weights",
                self.plan.weights.len()
            ))
        })
    }

    fn weight_shape(&self, id: WeightId, expected: &[usize], what: &str) -> Result<()> {
        let w = self.weight(id, what)?;
        if w.shape != expected {
            return Err(RuntimeError::plan(format!(
                "{what}: weight `{}` has shape {}, the op needs {}",
                w.name,
                fmt_shape(&w.shape),
                fmt_shape(expected)
            )));
        }
        Ok(())
    }

    fn features(&self, b: &BufferDecl, expected: usize, what: &str) -> Result<()> {
        if b.features != expected {
            return Err(RuntimeError::plan(format!(
                "{what}: buffer `{}` has {} features, the op needs {expected}",
                b.name, b.features
            )));
        }
        Ok(())
    }

    /// Checks a library op's source/destination pair and time selection.
    fn io_pair(
        &self,
        x: BufId,
        y: BufId,
        time: TimeSel,
        in_loop: bool,
        what: &str,
    ) -> Result<(&BufferDecl, &BufferDecl)> {
        let xd = self.buf(x, what)?;
        let yd = self.buf(y, what)?;
        if x == y || xd.slot == yd.slot {
            return Err(RuntimeError::plan(format!(
                "{what}: input `{}` and output `{}` share slot {}",
                xd.name, yd.name, xd.slot
            )));
        }
        match (time, in_loop) {
            (TimeSel::All { delay }, false) => {
                let xseq = xd.extent == Extent::Seq;
                let yseq = yd.extent == Extent::Seq;
                if xseq && !yseq {
                    return Err(RuntimeError::plan(format!(
                        "{what}: TimeSel::All reads sequence `{}` ({}) into `{}` ({})",
                        xd.name,
                        ext_name(xd.extent),
                        yd.name,
                        ext_name(yd.extent)
                    )));
                }
                if !yseq && delay != 0 {
                    return Err(RuntimeError::plan(format!(
                        "{what}: delay {delay} into non-sequence buffer `{}`",
                        yd.name
                    )));
                }
            }
            (TimeSel::Step { .. }, true) => {}
            (TimeSel::All { .. }, true) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: TimeSel::All inside a step loop"
                )))
            }
            (TimeSel::Step { .. }, false) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: TimeSel::Step outside a step loop"
                )))
            }
        }
        Ok((xd, yd))
    }

    /// A conv's geometry, its buffers' features and its weights' shapes.
    fn conv(
        &self,
        xd: &BufferDecl,
        yd: &BufferDecl,
        w: WeightId,
        bias: Option<WeightId>,
        g: &ConvGeom,
        what: &str,
    ) -> Result<()> {
        let ok = g.c_in > 0
            && g.c_out > 0
            && g.kh > 0
            && g.kw > 0
            && g.stride > 0
            && g.h.saturating_add(g.pad.saturating_mul(2)) >= g.kh
            && g.w.saturating_add(g.pad.saturating_mul(2)) >= g.kw
            && g.h_out == (g.h.saturating_add(g.pad.saturating_mul(2)) - g.kh) / g.stride + 1
            && g.w_out == (g.w.saturating_add(g.pad.saturating_mul(2)) - g.kw) / g.stride + 1;
        if !ok {
            return Err(RuntimeError::plan(format!(
                "{what}: inconsistent geometry {g:?} (h_out must be (h + 2 pad - kh) / stride + 1, all sizes >= 1)"
            )));
        }
        self.features(xd, sat(&[g.c_in, g.h, g.w]), what)?;
        self.features(yd, sat(&[g.c_out, g.h_out, g.w_out]), what)?;
        self.weight_shape(w, &[g.c_out, g.c_in, g.kh, g.kw], what)?;
        if let Some(bi) = bias {
            self.weight_shape(bi, &[g.c_out], what)?;
        }
        Ok(())
    }

    /// A pooling op's geometry and its buffers' features.
    fn pool(&self, xd: &BufferDecl, yd: &BufferDecl, g: &PoolGeom, what: &str) -> Result<()> {
        let ok = g.c > 0
            && g.k > 0
            && g.stride > 0
            && g.pad.saturating_mul(2) <= g.k
            && g.h.saturating_add(g.pad.saturating_mul(2)) >= g.k
            && g.w.saturating_add(g.pad.saturating_mul(2)) >= g.k
            && g.h_out == (g.h.saturating_add(g.pad.saturating_mul(2)) - g.k) / g.stride + 1
            && g.w_out == (g.w.saturating_add(g.pad.saturating_mul(2)) - g.k) / g.stride + 1;
        if !ok {
            return Err(RuntimeError::plan(format!(
                "{what}: inconsistent geometry {g:?} (h_out must be (h + 2 pad - k) / stride + 1, pad <= k / 2, all sizes >= 1)"
            )));
        }
        self.features(xd, sat(&[g.c, g.h, g.w]), what)?;
        self.features(yd, sat(&[g.c, g.h_out, g.w_out]), what)?;
        Ok(())
    }

    /// A time matrix's weights and parameters (`out_slot`: the op's output, which a
    /// response buffer must not share); `Some(T0)` for a `[T0, T0]` weight.
    fn time_matrix(
        &self,
        matrix: &TimeMatrix,
        out_slot: usize,
        what: &str,
    ) -> Result<Option<usize>> {
        let response = |r: BufId| self.response_buf(r, out_slot, what);
        let square = |w: WeightId| -> Result<usize> {
            let d = self.weight(w, what)?;
            match d.shape.as_slice() {
                [a, b] if a == b && *a > 0 => Ok(*a),
                _ => Err(RuntimeError::plan(format!(
                    "{what}: weight `{}` has shape {}, a time matrix is [T, T]",
                    d.name,
                    fmt_shape(&d.shape)
                ))),
            }
        };
        Ok(match *matrix {
            TimeMatrix::Weight { w } => Some(square(w)?),
            TimeMatrix::Masked { w, k, lambda } => {
                if k == 0 || lambda >= self.plan.params.len() {
                    return Err(RuntimeError::plan(format!(
                            "{what}: a masked matrix needs k >= 1 and a parameter (k = {k}, parameter {lambda})"
                        )));
                }
                Some(square(w)?)
            }
            TimeMatrix::Band { w, k } => {
                if k == 0 {
                    return Err(RuntimeError::plan(format!("{what}: band of width 0")));
                }
                self.weight_shape(w, &[k], what)?;
                None
            }
            TimeMatrix::Response { r } => {
                response(r)?;
                None
            }
        })
    }

    fn response_buf(&self, r: BufId, out_slot: usize, what: &str) -> Result<()> {
        let d = self.buf(r, what)?;
        if d.extent != Extent::Seq || d.features != 1 {
            return Err(RuntimeError::plan(format!(
                "{what}: response buffer `{}` must be Seq with 1 feature",
                d.name
            )));
        }
        if d.slot == out_slot {
            return Err(RuntimeError::plan(format!(
                "{what}: response buffer `{}` shares the output's slot",
                d.name
            )));
        }
        Ok(())
    }

    fn time_bias(
        &self,
        bias: &TimeBias,
        steps: Option<usize>,
        out_slot: usize,
        what: &str,
    ) -> Result<()> {
        match *bias {
            TimeBias::Weight(b) => match steps {
                Some(n) => self.weight_shape(b, &[n, 1], what)?,
                None => {
                    return Err(RuntimeError::plan(format!(
                        "{what}: a per-step bias weight needs a [T, T] weight matrix"
                    )))
                }
            },
            TimeBias::Scalar(b) => {
                let d = self.weight(b, what)?;
                if d.numel() != 1 {
                    return Err(RuntimeError::plan(format!(
                        "{what}: scalar bias `{}` has shape {}",
                        d.name,
                        fmt_shape(&d.shape)
                    )));
                }
            }
            TimeBias::Response(r) => self.response_buf(r, out_slot, what)?,
        }
        Ok(())
    }

    fn ops(&self, ops: &[Op], in_loop: bool, path: &str) -> Result<Vec<Exec>> {
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let what = format!("op {path}{i}");
            let what = what.as_str();
            out.push(match op {
                Op::Zero { buf } => {
                    self.buf(*buf, what)?;
                    Exec::Zero { buf: *buf }
                }
                Op::Gemm {
                    x,
                    w,
                    bias,
                    y,
                    k,
                    n,
                    time,
                    accumulate,
                    sparse,
                } => {
                    let what = &format!("{what} (gemm)");
                    let (xd, yd) = self.io_pair(*x, *y, *time, in_loop, what)?;
                    self.features(xd, *k, what)?;
                    self.features(yd, *n, what)?;
                    self.weight_shape(*w, &[*n, *k], what)?;
                    if let Some(bi) = bias {
                        self.weight_shape(*bi, &[*n], what)?;
                    }
                    Exec::Gemm {
                        x: *x,
                        w: *w,
                        bias: *bias,
                        y: *y,
                        k: *k,
                        n: *n,
                        time: *time,
                        accumulate: *accumulate,
                        sparse: *sparse,
                    }
                }
                Op::TimeMix {
                    x,
                    y,
                    matrix,
                    bias,
                    time,
                    accumulate,
                } => {
                    let what = &format!("{what} (time_mix)");
                    let (xd, yd) = self.io_pair(*x, *y, *time, in_loop, what)?;
                    if yd.extent != Extent::Seq || matches!(time, TimeSel::All { delay } | TimeSel::Step { delay } if *delay != 0) {
                        return Err(RuntimeError::plan(format!(
                            "{what}: the output must be a sequence and the delay 0"
                        )));
                    }
                    self.features(xd, yd.features, what)?;
                    let steps = self.time_matrix(matrix, yd.slot, what)?;
                    if in_loop && !matches!(matrix, TimeMatrix::Band { .. }) {
                        return Err(RuntimeError::plan(format!(
                            "{what}: only a band matrix (causal, finite) runs step by step"
                        )));
                    }
                    if let Some(bi) = bias {
                        self.time_bias(bi, steps, yd.slot, what)?;
                    }
                    Exec::TimeMix {
                        x: *x,
                        y: *y,
                        matrix: *matrix,
                        bias: *bias,
                        time: *time,
                        accumulate: *accumulate,
                    }
                }
                Op::TimeMixDx {
                    dy,
                    dx,
                    matrix,
                    accumulate,
                } => {
                    let what = &format!("{what} (time_mix_dx)");
                    let (yd, xd) = (self.buf(*dy, what)?, self.buf(*dx, what)?);
                    if in_loop || yd.extent != Extent::Seq || xd.extent == Extent::Single {
                        return Err(RuntimeError::plan(format!(
                            "{what}: runs over all T, from a sequence into a sequence or a static value"
                        )));
                    }
                    if yd.slot == xd.slot {
                        return Err(RuntimeError::plan(format!(
                            "{what}: `{}` and `{}` share slot {}",
                            yd.name, xd.name, yd.slot
                        )));
                    }
                    self.features(xd, yd.features, what)?;
                    self.time_matrix(matrix, xd.slot, what)?;
                    Exec::TimeMixDx {
                        dy: *dy,
                        dx: *dx,
                        matrix: *matrix,
                        accumulate: *accumulate,
                    }
                }
                Op::TimeMixDw {
                    x,
                    dy,
                    matrix,
                    bias,
                } => {
                    let what = &format!("{what} (time_mix_dw)");
                    let (xd, yd) = (self.buf(*x, what)?, self.buf(*dy, what)?);
                    if in_loop || yd.extent != Extent::Seq || xd.extent == Extent::Single {
                        return Err(RuntimeError::plan(format!(
                            "{what}: runs over all T, with a sequence gradient and a sequence or static input"
                        )));
                    }
                    self.features(xd, yd.features, what)?;
                    if let TimeMatrix::Response { .. } = matrix {
                        return Err(RuntimeError::plan(format!(
                            "{what}: a response matrix has no weight to differentiate"
                        )));
                    }
                    let steps = self.time_matrix(matrix, usize::MAX, what)?;
                    if let Some(bi) = bias {
                        if let TimeBias::Response(_) = bi {
                            return Err(RuntimeError::plan(format!(
                                "{what}: a response bias has no weight to differentiate"
                            )));
                        }
                        self.time_bias(bi, steps, usize::MAX, what)?;
                    }
                    Exec::TimeMixDw {
                        x: *x,
                        dy: *dy,
                        matrix: *matrix,
                        bias: *bias,
                    }
                }
                Op::GemmDx {
                    dy,
                    w,
                    dx,
                    k,
                    n,
                    time,
                    accumulate,
                } => {
                    let what = &format!("{what} (gemm_dx)");
                    let (xd, yd) = self.io_pair(*dx, *dy, *time, in_loop, what)?;
                    self.features(xd, *k, what)?;
                    self.features(yd, *n, what)?;
                    self.weight_shape(*w, &[*n, *k], what)?;
                    Exec::GemmDx {
                        dy: *dy,
                        w: *w,
                        dx: *dx,
                        k: *k,
                        n: *n,
                        time: *time,
                        accumulate: *accumulate,
                    }
                }
                Op::GemmDw {
                    x,
                    dy,
                    w,
                    bias,
                    k,
                    n,
                    time,
                    sparse,
                } => {
                    let what = &format!("{what} (gemm_dw)");
                    let (xd, yd) = self.io_pair(*x, *dy, *time, in_loop, what)?;
                    self.features(xd, *k, what)?;
                    self.features(yd, *n, what)?;
                    self.weight_shape(*w, &[*n, *k], what)?;
                    if let Some(bi) = bias {
                        self.weight_shape(*bi, &[*n], what)?;
                    }
                    Exec::GemmDw {
                        x: *x,
                        dy: *dy,
                        w: *w,
                        bias: *bias,
                        k: *k,
                        n: *n,
                        time: *time,
                        sparse: *sparse,
                    }
                }
                Op::Conv2dDx {
                    dy,
                    w,
                    dx,
                    geom: g,
                    time,
                    accumulate,
                } => {
                    let what = &format!("{what} (conv2d_dx)");
                    let (xd, yd) = self.io_pair(*dx, *dy, *time, in_loop, what)?;
                    self.conv(xd, yd, *w, None, g, what)?;
                    Exec::Conv2dDx {
                        dy: *dy,
                        w: *w,
                        dx: *dx,
                        geom: *g,
                        time: *time,
                        accumulate: *accumulate,
                    }
                }
                Op::Conv2dDw {
                    x,
                    dy,
                    w,
                    bias,
                    geom: g,
                    time,
                    sparse,
                } => {
                    let what = &format!("{what} (conv2d_dw)");
                    let (xd, yd) = self.io_pair(*x, *dy, *time, in_loop, what)?;
                    self.conv(xd, yd, *w, *bias, g, what)?;
                    if *bias == Some(*w) {
                        return Err(RuntimeError::plan(format!(
                            "{what}: weight and bias are the same tensor"
                        )));
                    }
                    Exec::Conv2dDw {
                        x: *x,
                        dy: *dy,
                        w: *w,
                        bias: *bias,
                        geom: *g,
                        time: *time,
                        sparse: *sparse,
                    }
                }
                Op::Pool2dDx {
                    x,
                    dy,
                    dx,
                    kind,
                    geom: g,
                    time,
                    accumulate,
                } => {
                    let what = &format!("{what} (pool2d_dx)");
                    let (xd, yd) = self.io_pair(*dx, *dy, *time, in_loop, what)?;
                    self.pool(xd, yd, g, what)?;
                    // The forward input: read at dx's offsets, so the same layout.
                    let (fd, _) = self.io_pair(*x, *dy, *time, in_loop, what)?;
                    if fd.extent != xd.extent || fd.features != xd.features || fd.slot == xd.slot
                    {
                        return Err(RuntimeError::plan(format!(
                            "{what}: the forward input `{}` ({}, {} features, slot {}) must have the layout of `{}` ({}, {} features) and another slot",
                            fd.name,
                            ext_name(fd.extent),
                            fd.features,
                            fd.slot,
                            xd.name,
                            ext_name(xd.extent),
                            xd.features
                        )));
                    }
                    Exec::Pool2dDx {
                        x: *x,
                        dy: *dy,
                        dx: *dx,
                        kind: *kind,
                        geom: *g,
                        time: *time,
                        accumulate: *accumulate,
                    }
                }
                Op::Conv2d {
                    x,
                    w,
                    bias,
                    y,
                    geom: g,
                    time,
                    accumulate,
                    sparse,
                } => {
                    let what = &format!("{what} (conv2d)");
                    let (xd, yd) = self.io_pair(*x, *y, *time, in_loop, what)?;
                    self.conv(xd, yd, *w, *bias, g, what)?;
                    Exec::Conv2d {
                        x: *x,
                        w: *w,
                        bias: *bias,
                        y: *y,
                        geom: *g,
                        time: *time,
                        accumulate: *accumulate,
                        sparse: *sparse,
                    }
                }
                Op::Pool2d {
                    x,
                    y,
                    kind,
                    geom: g,
                    time,
                } => {
                    let what = &format!("{what} (pool2d)");
                    let (xd, yd) = self.io_pair(*x, *y, *time, in_loop, what)?;
                    self.pool(xd, yd, g, what)?;
                    Exec::Pool2d {
                        x: *x,
                        y: *y,
                        kind: *kind,
                        geom: *g,
                        time: *time,
                    }
                }
                Op::Launch {
                    kernel,
                    groups,
                    time,
                } => {
                    let what = &format!("{what} (launch)");
                    let decl = self.plan.kernels.get(*kernel).ok_or_else(|| {
                        RuntimeError::plan(format!(
                            "{what}: kernel {kernel} does not exist (the plan has {} kernels)",
                            self.plan.kernels.len()
                        ))
                    })?;
                    if *kernel >= self.n_kernels {
                        return Err(RuntimeError::plan(format!(
                            "{what}: kernel {kernel} is not in the kernel table ({} kernels)",
                            self.n_kernels
                        )));
                    }
                    match (time, in_loop) {
                        (LaunchTime::Seq, false) | (LaunchTime::Step, true) => {}
                        (LaunchTime::Seq, true) => {
                            return Err(RuntimeError::plan(format!(
                                "{what}: LaunchTime::Seq inside a step loop"
                            )))
                        }
                        (LaunchTime::Step, false) => {
                            return Err(RuntimeError::plan(format!(
                                "{what}: LaunchTime::Step outside a step loop"
                            )))
                        }
                    }
                    let mut descs = Vec::with_capacity(groups.len());
                    for (gi, g) in groups.iter().enumerate() {
                        let what = &format!("{what} group {gi} of `{}`", decl.symbol);
                        if g.args.len() != decl.arity {
                            return Err(RuntimeError::plan(format!(
                                "{what}: {} buffer arguments, the kernel takes {}",
                                g.args.len(),
                                decl.arity
                            )));
                        }
                        if g.params > self.plan.params.len() {
                            return Err(RuntimeError::plan(format!(
                                "{what}: parameter offset {} is beyond the {} parameters",
                                g.params,
                                self.plan.params.len()
                            )));
                        }
                        let mut slots = Vec::with_capacity(g.args.len());
                        for &a in &g.args {
                            let bd = self.buf(a, what)?;
                            self.features(bd, g.features, what)?;
                            if slots.contains(&bd.slot) {
                                return Err(RuntimeError::plan(format!(
                                    "{what}: two arguments share slot {} (buffer `{}`)",
                                    bd.slot, bd.name
                                )));
                            }
                            slots.push(bd.slot);
                        }
                        if g.weights.len() != decl.weights.len() {
                            return Err(RuntimeError::plan(format!(
                                "{what}: {} weight arguments, the kernel takes {}",
                                g.weights.len(),
                                decl.weights.len()
                            )));
                        }
                        let mut weights = Vec::with_capacity(g.weights.len());
                        for (&id, u) in g.weights.iter().zip(&decl.weights) {
                            let wd = self.weight(id, what)?;
                            let len = if u.per_neuron { g.features } else { 1 };
                            if wd.numel() != len {
                                return Err(RuntimeError::plan(format!(
                                    "{what}: weight `{}` has {} elements, the kernel reads {len} \
                                     ({})",
                                    wd.name,
                                    wd.numel(),
                                    if u.per_neuron { "one per neuron" } else { "one" }
                                )));
                            }
                            if u.grad && !self.backward {
                                return Err(RuntimeError::plan(format!(
                                    "{what}: accumulates the gradient of `{}` outside the \
                                     backward ops",
                                    wd.name
                                )));
                            }
                            weights.push(WeightArg {
                                id,
                                grad: u.grad,
                                len,
                            });
                        }
                        descs.push(GroupDesc {
                            slots,
                            params: g.params,
                            features: g.features,
                            weights,
                        });
                    }
                    Exec::Launch {
                        kernel: *kernel,
                        groups: descs,
                        time: *time,
                    }
                }
                Op::StepLoop { body } | Op::ReverseStepLoop { body } => {
                    if in_loop {
                        return Err(RuntimeError::plan(format!(
                            "{what}: step loops cannot nest"
                        )));
                    }
                    Exec::StepLoop {
                        body: self.ops(body, true, &format!("{path}{i}."))?,
                        reverse: matches!(op, Op::ReverseStepLoop { .. }),
                    }
                }
            });
        }
        Ok(out)
    }
}

/// Checks every index, shape and extent of a plan; returns the resolved ops.
/// Checks a plan; returns its forward ops and (training plans) its backward ops.
#[allow(clippy::type_complexity)]
fn validate(plan: &Plan, n_kernels: usize) -> Result<(Vec<Exec>, Option<Vec<Exec>>)> {
    if n_kernels != plan.kernels.len() {
        return Err(RuntimeError::KernelTable {
            expected: plan.kernels.len(),
            found: n_kernels,
        });
    }
    for b in &plan.buffers {
        if b.slot >= plan.slots {
            return Err(RuntimeError::plan(format!(
                "buffer `{}` is in slot {}, the plan has {} slots",
                b.name, b.slot, plan.slots
            )));
        }
    }
    let mut names = HashSet::new();
    for w in &plan.weights {
        if !names.insert(w.name.as_str()) {
            return Err(RuntimeError::plan(format!(
                "weight name `{}` appears twice",
                w.name
            )));
        }
        numel(&w.shape)?;
        if let Init::UniformFanIn { fan_in: 0, .. } = w.init {
            return Err(RuntimeError::plan(format!(
                "weight `{}`: UniformFanIn with fan_in = 0",
                w.name
            )));
        }
        if let Init::Constant(v) = w.init {
            if !v.is_finite() {
                return Err(RuntimeError::plan(format!(
                    "weight `{}`: initial value {v} is not finite",
                    w.name
                )));
            }
        }
    }
    for p in &plan.params {
        if !names.insert(p.name.as_str()) {
            return Err(RuntimeError::plan(format!(
                "parameter name `{}` appears twice (or is also a weight name)",
                p.name
            )));
        }
        if !p.check.holds(p.value) {
            return Err(RuntimeError::BadParam {
                name: p.name.clone(),
                value: p.value,
                expected: p.check.describe(),
                origin: "the plan".into(),
            });
        }
    }
    let c = Checker {
        plan,
        n_kernels,
        backward: false,
    };
    for inp in &plan.inputs {
        let what = format!("input `{}`", inp.name);
        let b = c.buf(inp.buffer, &what)?;
        c.features(b, numel(&inp.shape)?, &what)?;
        let seq = b.extent == Extent::Seq;
        if seq != inp.time_varying {
            return Err(RuntimeError::plan(format!(
                "{what}: time_varying = {} but buffer `{}` is {}",
                inp.time_varying,
                b.name,
                ext_name(b.extent)
            )));
        }
    }
    for o in &plan.outputs {
        let what = format!("output `{}`", o.name);
        let b = c.buf(o.buffer, &what)?;
        c.features(b, numel(&o.shape)?, &what)?;
        let seq = b.extent == Extent::Seq;
        let want_seq = o.kind != OutputKind::Counts;
        if seq != want_seq {
            return Err(RuntimeError::plan(format!(
                "{what}: a {:?} output needs a {} buffer, `{}` is {}",
                o.kind,
                if want_seq { "Seq" } else { "Static or Single" },
                b.name,
                ext_name(b.extent)
            )));
        }
    }
    let forward = c.ops(&plan.ops, false, "")?;
    let backward = match &plan.train {
        None => None,
        Some(tp) => {
            let check_out = |o: usize, grad: BufId, what: &str| -> Result<()> {
                let out = plan.outputs.get(o).ok_or_else(|| {
                    RuntimeError::plan(format!(
                        "{what} reads output {o}, the plan has {}",
                        plan.outputs.len()
                    ))
                })?;
                let g = c.buf(grad, what)?;
                let ob = c.buf(out.buffer, what)?;
                if g.features != ob.features
                    || (g.extent == Extent::Seq) != (ob.extent == Extent::Seq)
                {
                    return Err(RuntimeError::plan(format!(
                        "{what}: gradient buffer `{}` does not match output `{}`",
                        g.name, out.name
                    )));
                }
                Ok(())
            };
            check_out(tp.loss.output, tp.loss.grad, "the loss")?;
            for r in &tp.regularizers {
                check_out(r.output, r.grad, "a regulariser")?;
            }
            for &(i, g) in &tp.input_grads {
                let input = plan.inputs.get(i).ok_or_else(|| {
                    RuntimeError::plan(format!(
                        "an input gradient names input {i}, the plan has {}",
                        plan.inputs.len()
                    ))
                })?;
                let (gb, ib) = (
                    c.buf(g, "an input gradient")?,
                    c.buf(input.buffer, "an input")?,
                );
                if gb.features != ib.features || gb.extent != ib.extent {
                    return Err(RuntimeError::plan(format!(
                        "input gradient buffer `{}` does not match input `{}`",
                        gb.name, input.name
                    )));
                }
            }
            let cb = Checker {
                backward: true,
                ..c
            };
            Some(cb.ops(&tp.backward, false, "backward ")?)
        }
    };
    Ok((forward, backward))
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
    fn session_is_send() {
        fn send<T: Send>() {}
        send::<Session>();
        send::<KernelTable>();
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
}
