//! A runtime [`Plan`] as Rust tokens: an expression that rebuilds the plan (the `snn!`
//! macro path, where the plan is compiled into the user's crate instead of being handed
//! over at run time). Every value is written exactly (f32 as raw bits), so the rebuilt plan
//! is `==` to the original.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use snn_runtime::plan::*;

/// An expression of type `Plan`; `m` is the path of the runtime's `plan` module
/// (e.g. `::snn::plan`).
pub fn plan_tokens(p: &Plan, m: &TokenStream) -> TokenStream {
    let name = &p.name;
    let t = usize_lit(p.t);
    let batch = usize_lit(p.batch);
    let seed = Literal::u64_suffixed(p.seed);
    let slots = usize_lit(p.slots);
    let buffers = p.buffers.iter().map(|b| {
        let name = &b.name;
        let extent = extent(b.extent, m);
        let features = usize_lit(b.features);
        let slot = usize_lit(b.slot);
        quote!(#m::BufferDecl { name: ::std::string::String::from(#name), extent: #extent, features: #features, slot: #slot })
    });
    let weights = p.weights.iter().map(|w| {
        let name = &w.name;
        let shape = usizes(&w.shape);
        let init = match w.init {
            Init::UniformFanIn { fan_in, gain } => {
                let fan_in = usize_lit(fan_in);
                let gain = f32_bits(gain);
                quote!(#m::Init::UniformFanIn { fan_in: #fan_in, gain: #gain })
            }
            Init::Zeros => quote!(#m::Init::Zeros),
            Init::Constant(v) => {
                let v = f32_bits(v);
                quote!(#m::Init::Constant(#v))
            }
            Init::Geometric { ratio } => {
                let r = f32_bits(ratio);
                quote!(#m::Init::Geometric { ratio: #r })
            }
        };
        quote!(#m::WeightDecl { name: ::std::string::String::from(#name), shape: #shape, init: #init })
    });
    let params = p.params.iter().map(|q| {
        let name = &q.name;
        let value = f32_bits(q.value);
        let check = match q.check {
            ParamCheck::Any => quote!(Any),
            ParamCheck::Positive => quote!(Positive),
            ParamCheck::NonNegative => quote!(NonNegative),
            ParamCheck::UnitInterval => quote!(UnitInterval),
            ParamCheck::Bits => quote!(Bits),
        };
        quote!(#m::ParamDecl { name: ::std::string::String::from(#name), value: #value, check: #m::ParamCheck::#check })
    });
    let inputs = p.inputs.iter().map(|i| {
        let name = &i.name;
        let buffer = usize_lit(i.buffer);
        let shape = usizes(&i.shape);
        let tv = i.time_varying;
        quote!(#m::InputDecl { name: ::std::string::String::from(#name), buffer: #buffer, shape: #shape, time_varying: #tv })
    });
    let outputs = p.outputs.iter().map(|o| {
        let name = &o.name;
        let kind = match o.kind {
            OutputKind::Spikes => quote!(Spikes),
            OutputKind::Counts => quote!(Counts),
            OutputKind::Trace => quote!(Trace),
        };
        let buffer = usize_lit(o.buffer);
        let shape = usizes(&o.shape);
        quote!(#m::OutputDecl { name: ::std::string::String::from(#name), kind: #m::OutputKind::#kind, buffer: #buffer, shape: #shape })
    });
    let kernels = p.kernels.iter().map(|k| {
        let symbol = &k.symbol;
        let arity = usize_lit(k.arity);
        let weights = k.weights.iter().map(|u| {
            let (per_neuron, grad) = (u.per_neuron, u.grad);
            quote!(#m::WeightUse { per_neuron: #per_neuron, grad: #grad })
        });
        quote!(#m::KernelDecl {
            symbol: ::std::string::String::from(#symbol),
            arity: #arity,
            weights: ::std::vec![#(#weights),*],
        })
    });
    let ops = ops(&p.ops, m);
    let train = match &p.train {
        Some(tp) => {
            let tp = train_tokens(tp, m);
            quote!(::std::option::Option::Some(#tp))
        }
        None => quote!(::std::option::Option::None),
    };
    quote! {
        #m::Plan {
            name: ::std::string::String::from(#name),
            t: #t,
            batch: #batch,
            seed: #seed,
            buffers: ::std::vec![#(#buffers),*],
            slots: #slots,
            weights: ::std::vec![#(#weights),*],
            params: ::std::vec![#(#params),*],
            inputs: ::std::vec![#(#inputs),*],
            outputs: ::std::vec![#(#outputs),*],
            kernels: ::std::vec![#(#kernels),*],
            ops: #ops,
            train: #train,
        }
    }
}

/// The training plan of a model with a `train { }` block: the macro's `train_step` runs
/// the same backward ops and optimiser as `snnc train`.
fn train_tokens(tp: &TrainPlan, m: &TokenStream) -> TokenStream {
    let backward = ops(&tp.backward, m);
    let l = &tp.loss;
    let kind = match l.kind {
        LossKind::CrossEntropyCounts => quote!(#m::LossKind::CrossEntropyCounts),
        LossKind::CrossEntropyMaxMembrane => quote!(#m::LossKind::CrossEntropyMaxMembrane),
        LossKind::CrossEntropyMeanMembrane => quote!(#m::LossKind::CrossEntropyMeanMembrane),
        LossKind::MseCounts { on, off, groups } => {
            let (on, off, groups) = (f32_bits(on), f32_bits(off), usize_lit(groups));
            quote!(#m::LossKind::MseCounts { on: #on, off: #off, groups: #groups })
        }
        LossKind::FirstSpikeTime => quote!(#m::LossKind::FirstSpikeTime),
    };
    let (output, grad) = (usize_lit(l.output), usize_lit(l.grad));
    let loss = quote!(#m::LossDecl { kind: #kind, output: #output, grad: #grad });
    let regularizers = tp.regularizers.iter().map(|r| {
        let (output, grad) = (usize_lit(r.output), usize_lit(r.grad));
        let (lambda, target) = (f32_bits(r.lambda), f32_bits(r.target));
        quote!(#m::RegDecl { output: #output, grad: #grad, lambda: #lambda, target: #target })
    });
    let settings = settings_tokens(&tp.settings, m);
    let input_grads = tp.input_grads.iter().map(|&(i, b)| {
        let (i, b) = (usize_lit(i), usize_lit(b));
        quote!((#i, #b))
    });
    quote!(#m::TrainPlan {
        backward: #backward,
        input_grads: ::std::vec![#(#input_grads),*],
        loss: #loss,
        regularizers: ::std::vec![#(#regularizers),*],
        settings: #settings,
    })
}

fn settings_tokens(s: &TrainSettings, m: &TokenStream) -> TokenStream {
    let o = &s.optimizer;
    let kind = match o.kind {
        OptimizerKind::Sgd { momentum, nesterov } => {
            let momentum = f32_bits(momentum);
            quote!(#m::OptimizerKind::Sgd { momentum: #momentum, nesterov: #nesterov })
        }
        OptimizerKind::Adam => quote!(#m::OptimizerKind::Adam),
        OptimizerKind::AdamW => quote!(#m::OptimizerKind::AdamW),
    };
    let (lr, b1, b2, eps, wd) = (
        f32_bits(o.lr),
        f32_bits(o.betas.0),
        f32_bits(o.betas.1),
        f32_bits(o.eps),
        f32_bits(o.weight_decay),
    );
    let optimizer = quote!(#m::OptimizerDecl { kind: #kind, lr: #lr, betas: (#b1, #b2), eps: #eps, weight_decay: #wd });
    let schedule = match s.schedule {
        LrScheduleDecl::Constant => quote!(#m::LrScheduleDecl::Constant),
        LrScheduleDecl::Step { step_size, gamma } => {
            let (step_size, gamma) = (usize_lit(step_size), f32_bits(gamma));
            quote!(#m::LrScheduleDecl::Step { step_size: #step_size, gamma: #gamma })
        }
        LrScheduleDecl::Cosine { eta_min } => {
            let eta_min = f32_bits(eta_min);
            quote!(#m::LrScheduleDecl::Cosine { eta_min: #eta_min })
        }
    };
    let string = |v: &str| quote!(::std::string::String::from(#v));
    let opt_string = |v: &Option<String>| match v {
        Some(v) => {
            let v = string(v);
            quote!(::std::option::Option::Some(#v))
        }
        None => quote!(::std::option::Option::None),
    };
    let image_sequence = |v: &Option<ImageSequence>| match v {
        None => quote!(::std::option::Option::None),
        Some(ImageSequence::Rows) => quote!(::std::option::Option::Some(#m::ImageSequence::Rows)),
        Some(ImageSequence::Columns) => {
            quote!(::std::option::Option::Some(#m::ImageSequence::Columns))
        }
    };
    let data = match &s.data {
        None => quote!(::std::option::Option::None),
        Some(d) => {
            let d = match d {
                DataDecl::YinYang => quote!(#m::DataDecl::YinYang),
                DataDecl::Mnist { dir, sequence } => {
                    let (dir, sequence) = (string(dir), image_sequence(sequence));
                    quote!(#m::DataDecl::Mnist { dir: #dir, sequence: #sequence })
                }
                DataDecl::FashionMnist { dir, sequence } => {
                    let (dir, sequence) = (string(dir), image_sequence(sequence));
                    quote!(#m::DataDecl::FashionMnist { dir: #dir, sequence: #sequence })
                }
                DataDecl::Npy {
                    x,
                    y,
                    test_x,
                    test_y,
                } => {
                    let (x, y) = (string(x), string(y));
                    let (test_x, test_y) = (opt_string(test_x), opt_string(test_y));
                    quote!(#m::DataDecl::Npy { x: #x, y: #y, test_x: #test_x, test_y: #test_y })
                }
            };
            quote!(::std::option::Option::Some(#d))
        }
    };
    let clip = match s.clip {
        Some(c) => {
            let c = f32_bits(c);
            quote!(::std::option::Option::Some(#c))
        }
        None => quote!(::std::option::Option::None),
    };
    let (warmup, epochs, batch, validation) = (
        usize_lit(s.warmup),
        usize_lit(s.epochs),
        usize_lit(s.batch),
        usize_lit(s.validation),
    );
    quote!(#m::TrainSettings {
        optimizer: #optimizer,
        schedule: #schedule,
        warmup: #warmup,
        epochs: #epochs,
        batch: #batch,
        data: #data,
        clip: #clip,
        validation: #validation,
    })
}

fn usize_lit(v: usize) -> Literal {
    Literal::usize_suffixed(v)
}

fn usizes(v: &[usize]) -> TokenStream {
    let v = v.iter().map(|x| usize_lit(*x));
    quote!(::std::vec![#(#v),*])
}

/// Exact for every value, NaN payloads and signed zeros included.
fn f32_bits(v: f32) -> TokenStream {
    let bits = Literal::u32_suffixed(v.to_bits());
    quote!(f32::from_bits(#bits))
}

fn extent(e: Extent, m: &TokenStream) -> TokenStream {
    match e {
        Extent::Seq => quote!(#m::Extent::Seq),
        Extent::Static => quote!(#m::Extent::Static),
        Extent::Single => quote!(#m::Extent::Single),
    }
}

fn conv_geom(g: &ConvGeom, m: &TokenStream) -> TokenStream {
    let f = [
        g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.stride, g.pad, g.h_out, g.w_out,
    ]
    .map(usize_lit);
    let [c_in, h, gw, c_out, kh, kw, stride, pad, h_out, w_out] = f;
    quote!(#m::ConvGeom { c_in: #c_in, h: #h, w: #gw, c_out: #c_out, kh: #kh, kw: #kw, stride: #stride, pad: #pad, h_out: #h_out, w_out: #w_out })
}

fn pool_geom(g: &PoolGeom, m: &TokenStream) -> TokenStream {
    let f = [g.c, g.h, g.w, g.k, g.stride, g.pad, g.h_out, g.w_out].map(usize_lit);
    let [c, h, gw, k, stride, pad, h_out, w_out] = f;
    quote!(#m::PoolGeom { c: #c, h: #h, w: #gw, k: #k, stride: #stride, pad: #pad, h_out: #h_out, w_out: #w_out })
}

fn pool_kind(kind: PoolKind, m: &TokenStream) -> TokenStream {
    match kind {
        PoolKind::Max => quote!(#m::PoolKind::Max),
        PoolKind::Avg => quote!(#m::PoolKind::Avg),
    }
}

fn time_sel(t: TimeSel, m: &TokenStream) -> TokenStream {
    match t {
        TimeSel::All { delay } => {
            let d = usize_lit(delay);
            quote!(#m::TimeSel::All { delay: #d })
        }
        TimeSel::Step { delay } => {
            let d = usize_lit(delay);
            quote!(#m::TimeSel::Step { delay: #d })
        }
    }
}

fn opt_weight(w: Option<WeightId>) -> TokenStream {
    match w {
        Some(w) => {
            let w = usize_lit(w);
            quote!(::core::option::Option::Some(#w))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn ops(ops: &[Op], m: &TokenStream) -> TokenStream {
    let ops = ops.iter().map(|op| op_tokens(op, m));
    quote!(::std::vec![#(#ops),*])
}

fn op_tokens(op: &Op, m: &TokenStream) -> TokenStream {
    match op {
        Op::Zero { buf } => {
            let buf = usize_lit(*buf);
            quote!(#m::Op::Zero { buf: #buf })
        }
        Op::Gemm(Gemm {
            x,
            w,
            bias,
            y,
            k,
            n,
            time,
            accumulate,
            sparse,
        }) => {
            let (x, w, y, k, n) = (
                usize_lit(*x),
                usize_lit(*w),
                usize_lit(*y),
                usize_lit(*k),
                usize_lit(*n),
            );
            let bias = opt_weight(*bias);
            let time = time_sel(*time, m);
            quote!(#m::Op::Gemm(#m::Gemm { x: #x, w: #w, bias: #bias, y: #y, k: #k, n: #n, time: #time, accumulate: #accumulate, sparse: #sparse }))
        }
        Op::Conv2d(Conv2d {
            x,
            w,
            bias,
            y,
            geom,
            time,
            accumulate,
            sparse,
        }) => {
            let (x, w, y) = (usize_lit(*x), usize_lit(*w), usize_lit(*y));
            let bias = opt_weight(*bias);
            let time = time_sel(*time, m);
            let geom = conv_geom(geom, m);
            quote!(#m::Op::Conv2d(#m::Conv2d {
                x: #x, w: #w, bias: #bias, y: #y,
                geom: #geom,
                time: #time, accumulate: #accumulate, sparse: #sparse,
            }))
        }
        Op::Pool2d(Pool2d {
            x,
            y,
            kind,
            geom,
            time,
        }) => {
            let (x, y) = (usize_lit(*x), usize_lit(*y));
            let kind = pool_kind(*kind, m);
            let geom = pool_geom(geom, m);
            let time = time_sel(*time, m);
            quote!(#m::Op::Pool2d(#m::Pool2d {
                x: #x, y: #y, kind: #kind,
                geom: #geom,
                time: #time,
            }))
        }
        Op::Conv2dDx(Conv2dDx {
            dy,
            w,
            dx,
            geom,
            time,
            accumulate,
        }) => {
            let (dy, w, dx) = (usize_lit(*dy), usize_lit(*w), usize_lit(*dx));
            let geom = conv_geom(geom, m);
            let time = time_sel(*time, m);
            quote!(#m::Op::Conv2dDx(#m::Conv2dDx {
                dy: #dy, w: #w, dx: #dx,
                geom: #geom,
                time: #time, accumulate: #accumulate,
            }))
        }
        Op::Conv2dDw(Conv2dDw {
            x,
            dy,
            w,
            bias,
            geom,
            time,
            sparse,
        }) => {
            let (x, dy, w) = (usize_lit(*x), usize_lit(*dy), usize_lit(*w));
            let bias = opt_weight(*bias);
            let geom = conv_geom(geom, m);
            let time = time_sel(*time, m);
            quote!(#m::Op::Conv2dDw(#m::Conv2dDw {
                x: #x, dy: #dy, w: #w, bias: #bias,
                geom: #geom,
                time: #time, sparse: #sparse,
            }))
        }
        Op::Pool2dDx(Pool2dDx {
            x,
            dy,
            dx,
            kind,
            geom,
            time,
            accumulate,
        }) => {
            let (x, dy, dx) = (usize_lit(*x), usize_lit(*dy), usize_lit(*dx));
            let kind = pool_kind(*kind, m);
            let geom = pool_geom(geom, m);
            let time = time_sel(*time, m);
            quote!(#m::Op::Pool2dDx(#m::Pool2dDx {
                x: #x, dy: #dy, dx: #dx, kind: #kind,
                geom: #geom,
                time: #time, accumulate: #accumulate,
            }))
        }
        Op::Launch {
            kernel,
            groups,
            time,
        } => {
            let kernel = usize_lit(*kernel);
            let groups = groups.iter().map(|g| {
                let args = usizes(&g.args);
                let weights = usizes(&g.weights);
                let params = usize_lit(g.params);
                let features = usize_lit(g.features);
                quote!(#m::LaunchGroup { args: #args, weights: #weights, params: #params, features: #features })
            });
            let time = match time {
                LaunchTime::Seq => quote!(#m::LaunchTime::Seq),
                LaunchTime::Step => quote!(#m::LaunchTime::Step),
            };
            quote!(#m::Op::Launch { kernel: #kernel, groups: ::std::vec![#(#groups),*], time: #time })
        }
        Op::GemmDx(GemmDx {
            dy,
            w,
            dx,
            k,
            n,
            time,
            accumulate,
        }) => {
            let (dy, w, dx, k, n) = (
                usize_lit(*dy),
                usize_lit(*w),
                usize_lit(*dx),
                usize_lit(*k),
                usize_lit(*n),
            );
            let time = time_sel(*time, m);
            quote!(#m::Op::GemmDx(#m::GemmDx { dy: #dy, w: #w, dx: #dx, k: #k, n: #n, time: #time, accumulate: #accumulate }))
        }
        Op::GemmDw(GemmDw {
            x,
            dy,
            w,
            bias,
            k,
            n,
            time,
            sparse,
        }) => {
            let (x, dy, w, k, n) = (
                usize_lit(*x),
                usize_lit(*dy),
                usize_lit(*w),
                usize_lit(*k),
                usize_lit(*n),
            );
            let bias = opt_weight(*bias);
            let time = time_sel(*time, m);
            quote!(#m::Op::GemmDw(#m::GemmDw { x: #x, dy: #dy, w: #w, bias: #bias, k: #k, n: #n, time: #time, sparse: #sparse }))
        }
        Op::TimeMixDx(TimeMixDx {
            dy,
            dx,
            matrix,
            accumulate,
        }) => {
            let (dy, dx) = (usize_lit(*dy), usize_lit(*dx));
            let matrix = time_matrix(matrix, m);
            quote!(#m::Op::TimeMixDx(#m::TimeMixDx { dy: #dy, dx: #dx, matrix: #matrix, accumulate: #accumulate }))
        }
        Op::TimeMixDw(TimeMixDw {
            x,
            dy,
            matrix,
            bias,
        }) => {
            let (x, dy) = (usize_lit(*x), usize_lit(*dy));
            let matrix = time_matrix(matrix, m);
            let bias = time_bias(bias, m);
            quote!(#m::Op::TimeMixDw(#m::TimeMixDw { x: #x, dy: #dy, matrix: #matrix, bias: #bias }))
        }
        Op::StepLoop { body } => {
            let body = ops(body, m);
            quote!(#m::Op::StepLoop { body: #body })
        }
        Op::ReverseStepLoop { body } => {
            let body = ops(body, m);
            quote!(#m::Op::ReverseStepLoop { body: #body })
        }
        Op::TimeMix(TimeMix {
            x,
            y,
            matrix,
            bias,
            time,
            accumulate,
        }) => {
            let (x, y) = (usize_lit(*x), usize_lit(*y));
            let matrix = time_matrix(matrix, m);
            let bias = time_bias(bias, m);
            let time = time_sel(*time, m);
            quote!(#m::Op::TimeMix(#m::TimeMix { x: #x, y: #y, matrix: #matrix, bias: #bias, time: #time, accumulate: #accumulate }))
        }
    }
}

fn time_matrix(matrix: &TimeMatrix, m: &TokenStream) -> TokenStream {
    match *matrix {
        TimeMatrix::Weight { w } => {
            let w = usize_lit(w);
            quote!(#m::TimeMatrix::Weight { w: #w })
        }
        TimeMatrix::Masked { w, k, lambda } => {
            let (w, k, l) = (usize_lit(w), usize_lit(k), usize_lit(lambda));
            quote!(#m::TimeMatrix::Masked { w: #w, k: #k, lambda: #l })
        }
        TimeMatrix::Band { w, k } => {
            let (w, k) = (usize_lit(w), usize_lit(k));
            quote!(#m::TimeMatrix::Band { w: #w, k: #k })
        }
        TimeMatrix::Response { r } => {
            let r = usize_lit(r);
            quote!(#m::TimeMatrix::Response { r: #r })
        }
    }
}

fn time_bias(bias: &Option<TimeBias>, m: &TokenStream) -> TokenStream {
    match *bias {
        None => quote!(::core::option::Option::None),
        Some(TimeBias::Weight(w)) => {
            let w = usize_lit(w);
            quote!(::core::option::Option::Some(#m::TimeBias::Weight(#w)))
        }
        Some(TimeBias::Scalar(w)) => {
            let w = usize_lit(w);
            quote!(::core::option::Option::Some(#m::TimeBias::Scalar(#w)))
        }
        Some(TimeBias::Response(r)) => {
            let r = usize_lit(r);
            quote!(::core::option::Option::Some(#m::TimeBias::Response(#r)))
        }
    }
}
