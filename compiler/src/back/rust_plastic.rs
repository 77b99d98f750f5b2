//! Rust back end, plasticity kernels ([`PlasticKernel`]): the loop nest of
//! `snn_runtime::op::plastic` around the rule's body, in f64. One function per kernel with
//! the usual `extern "C" fn(*const SnnArgs)` signature; `params` points at f64 values.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::ir::expr::{print, BinOp, Func, Parens, Syntax, UnOp};
use crate::ir::kernel::PlasticKernel;
use crate::ir::names;
use crate::ir::synapse::{RuleForm, SynAssign, SynLeaf, SynVar};
use snn_runtime::plan::PlasticGeom;

fn param_ident(k: &PlasticKernel, i: usize) -> Ident {
    format_ident!("{}", names::local("p", i, &k.rule.params[i].name))
}

fn local_ident(k: &PlasticKernel, i: usize) -> Ident {
    format_ident!("{}", names::local("l", i, &k.rule.locals[i]))
}

fn state_ident(k: &PlasticKernel, i: usize) -> Ident {
    format_ident!("{}", names::local("e", i, &k.rule.states[i].name))
}

fn state_ptr(i: usize) -> Ident {
    format_ident!("st{}", i)
}

/// Loads of the synapse `wi`'s states into locals, and the stores back.
fn state_io(k: &PlasticKernel) -> (TokenStream, TokenStream) {
    let n = k.rule.states.len();
    let loads = (0..n).map(|i| {
        let (v, p) = (state_ident(k, i), state_ptr(i));
        quote!(let mut #v: f64 = *#p.add(wi) as f64;)
    });
    let stores = (0..n).map(|i| {
        let (v, p) = (state_ident(k, i), state_ptr(i));
        quote!(*#p.add(wi) = #v as f32;)
    });
    (quote!(#(#loads)*), quote!(#(#stores)*))
}

fn pre_ident(k: &PlasticKernel, i: usize) -> Ident {
    format_ident!("{}", names::local("a", i, &k.rule.pre_states[i].name))
}

fn post_ident(k: &PlasticKernel, i: usize) -> Ident {
    format_ident!("{}", names::local("q", i, &k.rule.post_states[i].name))
}

fn f64_lit(v: f64) -> TokenStream {
    if v.is_nan() {
        return quote!(f64::NAN);
    }
    if v.is_infinite() {
        return if v > 0.0 {
            quote!(f64::INFINITY)
        } else {
            quote!(f64::NEG_INFINITY)
        };
    }
    let lit = Literal::f64_suffixed(v.abs());
    if v.is_sign_negative() {
        quote!((-#lit))
    } else {
        quote!(#lit)
    }
}

/// Rust spellings of a rule's expressions, in f64 (comparisons give 1.0 or 0.0).
struct RuleSyntax<'a>(&'a PlasticKernel);

impl Syntax<SynLeaf> for RuleSyntax<'_> {
    type Out = TokenStream;
    fn parens(&self) -> Parens {
        Parens::Spelled
    }
    fn constant(&self, c: f32) -> TokenStream {
        // The f32 literal's exact value.
        f64_lit(c as f64)
    }
    fn leaf(&self, l: &SynLeaf) -> TokenStream {
        match l {
            SynLeaf::Param(i) => {
                let p = param_ident(self.0, *i);
                quote!(#p)
            }
            SynLeaf::W => quote!(s_w),
            SynLeaf::TPre => quote!(s_t_pre),
            SynLeaf::TPost => quote!(s_t_post),
            SynLeaf::Reward => quote!(s_reward),
            SynLeaf::Steps => quote!(s_steps),
            SynLeaf::Local(i) => {
                let v = local_ident(self.0, *i);
                quote!(#v)
            }
            SynLeaf::State(i) => {
                let v = state_ident(self.0, *i);
                quote!(#v)
            }
            SynLeaf::PreState(i) => {
                let v = pre_ident(self.0, *i);
                quote!(#v)
            }
            SynLeaf::PostState(i) => {
                let v = post_ident(self.0, *i);
                quote!(#v)
            }
            SynLeaf::SPre => quote!(s_s_pre),
            SynLeaf::SPost => quote!(s_s_post),
        }
    }
    fn unary(&self, op: UnOp, x: TokenStream) -> TokenStream {
        match op {
            UnOp::Neg => quote!((-#x)),
            UnOp::Not => quote!((if #x == 0.0f64 { 1.0f64 } else { 0.0f64 })),
        }
    }
    fn binary(&self, op: BinOp, a: TokenStream, b: TokenStream) -> TokenStream {
        let test = |c: TokenStream| quote!((if #c { 1.0f64 } else { 0.0f64 }));
        match op {
            BinOp::Add => quote!((#a + #b)),
            BinOp::Sub => quote!((#a - #b)),
            BinOp::Mul => quote!((#a * #b)),
            BinOp::Div => quote!((#a / #b)),
            BinOp::Pow => quote!((#a).powf(#b)),
            BinOp::Lt => test(quote!(#a < #b)),
            BinOp::Le => test(quote!(#a <= #b)),
            BinOp::Gt => test(quote!(#a > #b)),
            BinOp::Ge => test(quote!(#a >= #b)),
            BinOp::Eq => test(quote!(#a == #b)),
            BinOp::Ne => test(quote!(#a != #b)),
            BinOp::And => test(quote!(#a != 0.0f64 && #b != 0.0f64)),
            BinOp::Or => test(quote!(#a != 0.0f64 || #b != 0.0f64)),
        }
    }
    fn call(&self, f: Func, a: Vec<TokenStream>) -> TokenStream {
        match f {
            Func::Exp => quote!((#(#a)*).exp()),
            Func::Log => quote!((#(#a)*).ln()),
            Func::Sqrt => quote!((#(#a)*).sqrt()),
            Func::Abs => quote!((#(#a)*).abs()),
            Func::Tanh => quote!((#(#a)*).tanh()),
            Func::Floor => quote!((#(#a)*).floor()),
            Func::Sigmoid => {
                let x = &a[0];
                quote!((1.0f64 / (1.0f64 + (-#x).exp())))
            }
            Func::Step => {
                let x = &a[0];
                quote!((if #x >= 0.0f64 { 1.0f64 } else { 0.0f64 }))
            }
            Func::Min => {
                let (x, y) = (&a[0], &a[1]);
                quote!((#x).min(#y))
            }
            Func::Max => {
                let (x, y) = (&a[0], &a[1]);
                quote!((#x).max(#y))
            }
            Func::Select => {
                let (c, x, y) = (&a[0], &a[1], &a[2]);
                quote!((if #c != 0.0f64 { #x } else { #y }))
            }
            // Spyker's `max(lower, min(x, upper))`.
            Func::Clamp => {
                let (x, lo, hi) = (&a[0], &a[1], &a[2]);
                quote!((#lo).max((#x).min(#hi)))
            }
        }
    }
    fn group(&self, x: TokenStream) -> TokenStream {
        quote!((#x))
    }
}

/// Statements of one block.
fn stmts(k: &PlasticKernel, body: &[SynAssign]) -> TokenStream {
    let stmts = body.iter().map(|a| {
        let v = print(&RuleSyntax(k), &a.value);
        let target = match a.target {
            SynVar::W => quote!(s_w),
            SynVar::Local(i) => {
                let l = local_ident(k, i);
                quote!(#l)
            }
            SynVar::State(i) => {
                let l = state_ident(k, i);
                quote!(#l)
            }
            SynVar::PreState(i) => {
                let l = pre_ident(k, i);
                quote!(#l)
            }
            SynVar::PostState(i) => {
                let l = post_ident(k, i);
                quote!(#l)
            }
        };
        quote!(#target = #v;)
    });
    quote!(#(#stmts)*)
}

/// The rule's `let` temporaries, declared at the top of a block's run.
fn locals(k: &PlasticKernel) -> TokenStream {
    let locals = (0..k.rule.locals.len()).map(|i| {
        let l = local_ident(k, i);
        quote!(let mut #l: f64 = 0.0f64;)
    });
    quote!(#(#locals)*)
}

/// The traces of one (presynaptic, postsynaptic) pair at their initial values.
fn trace_inits(k: &PlasticKernel) -> TokenStream {
    let pre = (0..k.rule.pre_states.len()).map(|i| {
        let v = pre_ident(k, i);
        let init = print(&RuleSyntax(k), &k.rule.pre_states[i].init);
        quote!(let mut #v: f64 = #init;)
    });
    let post = (0..k.rule.post_states.len()).map(|i| {
        let v = post_ident(k, i);
        let init = print(&RuleSyntax(k), &k.rule.post_states[i].init);
        quote!(let mut #v: f64 = #init;)
    });
    quote!(#(#pre)* #(#post)*)
}

/// A per-step rule over the steps of one (presynaptic `p`, postsynaptic `n`) pair of sample
/// `b` (`p_live`: false for a convolution's padding, which never spikes): each block's
/// change to the batch-start weight `w0` goes into `acc`.
fn per_step_pair(k: &PlasticKernel, p_live: TokenStream) -> TokenStream {
    let pre_f = usize_lit(k.geom.pre_features());
    let post_f = usize_lit(k.geom.post_features());
    let inits = trace_inits(k);
    let locals = locals(k);
    let step = stmts(k, &k.rule.on_step);
    let on_pre = stmts(k, &k.rule.on_pre);
    let on_post = stmts(k, &k.rule.on_post);
    let pre_event = if k.rule.on_pre.is_empty() {
        quote!()
    } else {
        quote! {
            if s_s_pre != 0.0f64 {
                let mut s_w: f64 = w0;
                #locals
                #on_pre
                acc += s_w - w0;
            }
        }
    };
    // A gate lets through only the postsynaptic events of the neurons it selects.
    let gated = if k.gate {
        quote!(&& *gate.add(b * #post_f + n) != 0.0f32)
    } else {
        quote!()
    };
    let post_event = if k.rule.on_post.is_empty() {
        quote!()
    } else {
        quote! {
            if s_s_post != 0.0f64 #gated {
                let mut s_w: f64 = w0;
                #locals
                #on_post
                acc += s_w - w0;
            }
        }
    };
    let step_locals = if k.rule.on_step.is_empty() {
        quote!()
    } else {
        quote!(let s_w: f64 = w0; #locals)
    };
    quote! {
        #inits
        for t in 0..t_len {
            let s_s_pre: f64 = if #p_live { *pre.add((t * batch + b) * #pre_f + p) as f64 } else { 0.0f64 };
            let s_s_post: f64 = *post.add((t * batch + b) * #post_f + n) as f64;
            {
                #step_locals
                #step
            }
            #pre_event
            #post_event
        }
    }
}

/// The rule's statements, one event of one synapse (first-spike rules).
fn body(k: &PlasticKernel) -> TokenStream {
    let locals = locals(k);
    let on_post = stmts(k, &k.rule.on_post);
    quote! {
        #locals
        #on_post
    }
}

fn usize_lit(v: usize) -> Literal {
    Literal::usize_unsuffixed(v)
}

/// One plasticity kernel as an item (`export`: `#[no_mangle] extern "C"`, as in
/// [`super::rust::print_program`]; else a plain item of the `snn!` module).
pub fn kernel_tokens(k: &PlasticKernel, export: bool, name: &Ident) -> TokenStream {
    let params = (0..k.rule.params.len()).map(|i| {
        let p = param_ident(k, i);
        let at = usize_lit(i);
        quote!(let #p: f64 = *pp.add(#at);)
    });
    let gate = if k.gate {
        quote!(let gate = *a.bufs.add(3) as *const f32;)
    } else {
        quote!()
    };
    let reward_ptr = if k.reward {
        quote!(let reward = *a.bufs.add(4) as *const f32;)
    } else {
        quote!()
    };
    let reward_b = if k.reward {
        quote!(let s_reward: f64 = *reward.add(b) as f64;)
    } else {
        quote!()
    };
    let post_f = usize_lit(k.geom.post_features());
    let rule = body(k);
    // The event test of neuron `n` of sample `b`, then its first spike time.
    let event = if k.gate {
        quote! {
            if *gate.add(b * #post_f + n) == 0.0f32 { continue; }
            let t_post = first_spike(post, t_len, batch * #post_f, b * #post_f + n);
        }
    } else {
        quote! {
            let t_post = first_spike(post, t_len, batch * #post_f, b * #post_f + n);
            if t_post >= t_len { continue; }
        }
    };
    let (state_loads, state_stores) = state_io(k);
    let update = quote! {
        let mut s_w: f64 = *w.add(wi) as f64;
        #state_loads
        #rule
        *w.add(wi) = s_w as f32;
        #state_stores
    };
    let state_ptrs = (0..k.rule.states.len()).map(|i| {
        let p = state_ptr(i);
        let at = usize_lit(5 + i);
        quote!(let #p = *a.bufs.add(#at);)
    });
    let loops = if k.rule.form == RuleForm::PerStep {
        per_step_loops(k, &reward_b)
    } else {
        first_spike_loops(k, &reward_b, &event, &update)
    };
    let doc = format!(" {}", k.doc);
    let head = if export {
        quote!(#[no_mangle] pub unsafe extern "C" fn #name(a: *const SnnArgs))
    } else {
        quote!(pub unsafe extern "C" fn #name(a: *const SnnArgs))
    };
    quote! {
        #[doc = #doc]
        #head {
            /// The first step at which `buf[t * stride + at]` is non-zero, `t_len` if none.
            #[inline(always)]
            unsafe fn first_spike(buf: *const f32, t_len: usize, stride: usize, at: usize) -> usize {
                let mut t = 0;
                while t < t_len && *buf.add(t * stride + at) == 0.0f32 {
                    t += 1;
                }
                t
            }
            let a = &*a;
            let w = *a.bufs.add(0);
            let pre = *a.bufs.add(1) as *const f32;
            let post = *a.bufs.add(2) as *const f32;
            #gate
            #reward_ptr
            #(#state_ptrs)*
            let pp = a.params as *const f64;
            #(#params)*
            let (t_len, batch) = (a.t_len, a.batch);
            let s_steps: f64 = t_len as f64;
            for o in a.lo..a.hi {
                #loops
            }
        }
    }
}

/// Per-step rules: each synapse of map `o` sums its changes over the batch, then adds
/// them once.
fn per_step_loops(k: &PlasticKernel, reward_b: &TokenStream) -> TokenStream {
    let (loads, stores) = state_io(k);
    match k.geom {
        PlasticGeom::Dense { inputs, .. } => {
            let inputs = usize_lit(inputs);
            let pair = per_step_pair(k, quote!(true));
            quote! {
                for p in 0..#inputs {
                    let wi = o * #inputs + p;
                    let w0: f64 = *w.add(wi) as f64;
                    let mut acc: f64 = 0.0f64;
                    #loads
                    for b in 0..batch {
                        #reward_b
                        let n = o;
                        #pair
                    }
                    *w.add(wi) = (w0 + acc) as f32;
                    #stores
                }
            }
        }
        PlasticGeom::Conv(g) => {
            let (c_in, h, wd) = (usize_lit(g.c_in), usize_lit(g.h), usize_lit(g.w));
            let (kh, kw) = (usize_lit(g.kh), usize_lit(g.kw));
            let (ho, wo) = (usize_lit(g.h_out), usize_lit(g.w_out));
            let (stride, pad) = (usize_lit(g.stride), usize_lit(g.pad));
            let pair = per_step_pair(k, quote!(live));
            quote! {
                for c in 0..#c_in {
                    for ky in 0..#kh {
                        for kx in 0..#kw {
                            let wi = ((o * #c_in + c) * #kh + ky) * #kw + kx;
                            let w0: f64 = *w.add(wi) as f64;
                            let mut acc: f64 = 0.0f64;
                            #loads
                            for b in 0..batch {
                                #reward_b
                                for y in 0..#ho {
                                    for x in 0..#wo {
                                        let n = (o * #ho + y) * #wo + x;
                                        // Zero padding never spikes.
                                        let iy = (y * #stride + ky).wrapping_sub(#pad);
                                        let ix = (x * #stride + kx).wrapping_sub(#pad);
                                        let live = iy < #h && ix < #wd;
                                        let p = if live { (c * #h + iy) * #wd + ix } else { 0 };
                                        #pair
                                    }
                                }
                            }
                            *w.add(wi) = (w0 + acc) as f32;
                            #stores
                        }
                    }
                }
            }
        }
    }
}

/// First-spike rules: events in sample order, each update rounded to f32.
fn first_spike_loops(
    k: &PlasticKernel,
    reward_b: &TokenStream,
    event: &TokenStream,
    update: &TokenStream,
) -> TokenStream {
    let pre_f = usize_lit(k.geom.pre_features());
    match k.geom {
        PlasticGeom::Dense { inputs, .. } => {
            let inputs = usize_lit(inputs);
            quote! {
                for b in 0..batch {
                    #reward_b
                    let n = o;
                    #event
                    let s_t_post = t_post as f64;
                    for i in 0..#inputs {
                        let s_t_pre = first_spike(pre, t_len, batch * #pre_f, b * #pre_f + i) as f64;
                        let wi = o * #inputs + i;
                        #update
                    }
                }
            }
        }
        PlasticGeom::Conv(g) => {
            let (c_in, h, wd) = (usize_lit(g.c_in), usize_lit(g.h), usize_lit(g.w));
            let (kh, kw) = (usize_lit(g.kh), usize_lit(g.kw));
            let (ho, wo) = (usize_lit(g.h_out), usize_lit(g.w_out));
            let (stride, pad) = (usize_lit(g.stride), usize_lit(g.pad));
            quote! {
                for b in 0..batch {
                    #reward_b
                    for y in 0..#ho {
                        for x in 0..#wo {
                            let n = (o * #ho + y) * #wo + x;
                            #event
                            let s_t_post = t_post as f64;
                            for c in 0..#c_in {
                                for ky in 0..#kh {
                                    for kx in 0..#kw {
                                        // Zero padding never spikes.
                                        let iy = (y * #stride + ky).wrapping_sub(#pad);
                                        let ix = (x * #stride + kx).wrapping_sub(#pad);
                                        let s_t_pre = if iy < #h && ix < #wd {
                                            first_spike(pre, t_len, batch * #pre_f, b * #pre_f + (c * #h + iy) * #wd + ix)
                                        } else {
                                            t_len
                                        } as f64;
                                        let wi = ((o * #c_in + c) * #kh + ky) * #kw + kx;
                                        #update
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
