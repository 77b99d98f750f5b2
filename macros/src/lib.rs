//! `snn!` and `include_snn!`: a `.snn` model compiled into the user's crate at build time.
//!
//! Both macros run the whole snnc pipeline (the one pest grammar, the same passes, the same
//! Rust back end as the `snnc` CLI) and expand to a module named after the model:
//!
//! ```text
//! pub mod <model> {
//!     pub const NAME, T, BATCH, SEED, INPUTS, OUTPUTS;
//!     pub fn plan() -> ::snn::Result<&'static ::snn::plan::Plan>; // decoded on first use
//!     pub fn kernels() -> ::snn::KernelTable;    // the generated kernels, statically linked
//!     pub struct Network { .. }                  // new, forward, run, load_weights, session
//!     pub struct Outputs { pub <output>: ::snn::Tensor, .. }
//! }
//! ```
//!
//! The kernels are plain (not exported) `extern "C"` functions inside that module, so any
//! number of networks can live in one crate. Generated code refers to the runtime only as
//! `::snn::...` (the user needs only the `snn` crate) and allows the lints generated code
//! trips, so it builds under `#![deny(warnings)]`. The plan is embedded as bytes
//! (`snn_runtime::plan::encode`, serde + postcard) and decoded once, on the first `plan()`.
//!
//! Errors are compile errors: in `snn!` on the offending token (source byte offsets are
//! mapped back to the tokens the text was built from), in `include_snn!` on the path with
//! `file:line:col` in the message.
//!
//! Limitation: the body of `snn!` must be a valid Rust token stream, so the ODE form
//! `v' = ...` (a lone `'`) can't be written inline; write `v = v + ...` or use
//! `include_snn!`. Comments are Rust comments (the lexer drops them either way).

use std::path::{Path, PathBuf};

use proc_macro::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote, quote_spanned};
use snnc::diag::{Diagnostic, FileId, SourceMap};
use snnc::ir::kernel::Program;
use snnc::Compiler;

/// Name of the inline source in diagnostics.
const INLINE_NAME: &str = "<snn!>";

/// Compiles the `.snn` source in the braces into a Rust module named after its model.
///
/// ```ignore
/// snn::snn! {
///     model tiny {
///         T = 4
///         input x: [3]
///         h = dense(x, 2)
///         s = LIF(h, tau = 2.0)
///         output counts(s)
///     }
/// }
/// let mut net = tiny::Network::new()?;
/// ```
#[proc_macro]
pub fn snn(input: TokenStream) -> TokenStream {
    let mut text = Text::default();
    text.push_stream(input);
    let mut compiler = Compiler::default();
    let dir = manifest_dir();
    let parsed = snnc::front::load_str(
        &mut compiler.sources,
        INLINE_NAME,
        &text.src,
        dir.as_deref(),
    );
    let result = parsed.and_then(|p| {
        compiler.opts.train = has_train_block(&p);
        compiler.compile(&p)
    });
    match result {
        Ok(program) => {
            let source = Source::Inline;
            expand(&program, &compiler.sources, &source, None).into()
        }
        Err(d) => {
            let root = find_file(&compiler.sources, INLINE_NAME);
            let span = match (d.span, root) {
                (Some(s), Some(root)) if s.file == root => text.span_at(s.start as usize),
                _ => Span::call_site(),
            };
            let local = d.span.is_some_and(|s| Some(s.file) == root);
            error(&d, &compiler.sources, span, !local)
        }
    }
}

/// Compiles a `.snn` file at build time: `include_snn!("models/mlp.snn")`, the path relative
/// to `CARGO_MANIFEST_DIR`; cargo rebuilds when the file (or a file it includes) changes.
/// `include_snn!("models/mlp.snn" as name)` names the module `name` instead of the model.
#[proc_macro]
pub fn include_snn(input: TokenStream) -> TokenStream {
    let (rel, lit_span, rename) = match parse_include_args(input) {
        Ok(x) => x,
        Err((span, msg)) => return compile_error(&msg, span),
    };
    let path = match manifest_dir() {
        Some(d) => d.join(&rel),
        None => PathBuf::from(&rel),
    };
    let mut compiler = Compiler::default();
    let result = compiler.parse_file(&path).and_then(|p| {
        compiler.opts.train = has_train_block(&p);
        compiler.compile(&p)
    });
    match result {
        Ok(program) => expand(&program, &compiler.sources, &Source::File, rename).into(),
        Err(d) => error(&d, &compiler.sources, lit_span, true),
    }
}

/// A model with a `train { }` block is compiled for training, so its `Network` gets
/// `train_step` (the forward kernels then also keep what the backward pass reads).
fn has_train_block(p: &snnc::front::Parsed) -> bool {
    p.files
        .iter()
        .find(|(id, _)| *id == p.root)
        .and_then(|(_, f)| f.models.first())
        .is_some_and(|m| m.train.is_some())
}

fn manifest_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from)
}

fn find_file(sources: &SourceMap, name: &str) -> Option<FileId> {
    sources
        .files
        .iter()
        .position(|f| f.name == name)
        .map(|i| FileId(i as u32))
}

fn parse_include_args(
    input: TokenStream,
) -> Result<(String, Span, Option<proc_macro2::Ident>), (Span, String)> {
    let usage = "expected a string literal path, e.g. `include_snn!(\"models/mlp.snn\")`";
    let mut it = input.into_iter();
    let lit = match it.next() {
        Some(TokenTree::Literal(l)) => l,
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::None => {
            // A `$path:literal` forwarded by macro_rules arrives wrapped in a None group.
            return parse_include_args(g.stream());
        }
        Some(t) => return Err((t.span(), usage.into())),
        None => return Err((Span::call_site(), usage.into())),
    };
    let s = lit.to_string();
    let path = match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(p) if !p.contains('\\') => p.to_string(),
        _ => {
            return Err((
                lit.span(),
                format!("{usage} (plain string, no escapes or raw strings)"),
            ))
        }
    };
    let rename = match (it.next(), it.next(), it.next()) {
        (None, _, _) => None,
        (Some(TokenTree::Ident(kw)), Some(TokenTree::Ident(name)), None)
            if kw.to_string() == "as" =>
        {
            Some(format_ident!("{}", name.to_string()))
        }
        (Some(t), _, _) => {
            return Err((
                t.span(),
                "expected nothing or `as module_name` after the path".into(),
            ))
        }
    };
    Ok((path, lit.span(), rename))
}

/// Source text rebuilt from tokens, remembering which byte range each token produced.
#[derive(Default)]
struct Text {
    src: String,
    /// (start, end, span), in text order.
    tokens: Vec<(usize, usize, Span)>,
    /// The previous token was a joint punctuation (`=` of `==`): no space after it.
    joint: bool,
}

impl Text {
    fn push(&mut self, s: &str, span: Span, joint: bool) {
        if !self.src.is_empty() && !self.joint {
            self.src.push(' ');
        }
        let start = self.src.len();
        self.src.push_str(s);
        self.tokens.push((start, self.src.len(), span));
        self.joint = joint;
    }

    fn push_stream(&mut self, ts: TokenStream) {
        for tt in ts {
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    if !open.is_empty() {
                        self.push(open, g.span_open(), false);
                    }
                    self.push_stream(g.stream());
                    if !close.is_empty() {
                        self.push(close, g.span_close(), false);
                    }
                }
                TokenTree::Punct(p) => {
                    self.push(
                        &p.as_char().to_string(),
                        p.span(),
                        p.spacing() == Spacing::Joint,
                    );
                }
                TokenTree::Ident(i) => self.push(&i.to_string(), i.span(), false),
                TokenTree::Literal(l) => self.push(&l.to_string(), l.span(), false),
            }
        }
    }

    /// The span of the token at (or, in the space between tokens, right after) `offset`.
    fn span_at(&self, offset: usize) -> Span {
        self.tokens
            .iter()
            .find(|(_, end, _)| *end > offset)
            .or(self.tokens.last())
            .map(|t| t.2)
            .unwrap_or_else(Span::call_site)
    }
}

/// `compile_error!` for a diagnostic. `with_location` adds `file:line:col` (for
/// `include_snn!`, or an error in a file other than the inline source).
fn error(d: &Diagnostic, sources: &SourceMap, span: Span, with_location: bool) -> TokenStream {
    // `file:line:col`, with paths relative to the crate root as the user wrote them.
    let location = |s| {
        let loc = sources.location(s);
        match manifest_dir() {
            Some(dir) => {
                let prefix = format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR);
                loc.strip_prefix(&prefix).map(str::to_string).unwrap_or(loc)
            }
            None => loc,
        }
    };
    let mut msg = String::new();
    if let (true, Some(s)) = (with_location, d.span) {
        msg.push_str(&location(s));
        msg.push_str(": ");
    }
    msg.push_str(&format!("{} [{}]", d.message, d.kind.code()));
    if !d.label.is_empty() && !d.message.contains(&d.label) {
        msg.push_str(&format!("\nnote: {}", d.label));
    }
    for (s, text) in &d.notes {
        msg.push_str(&format!("\nnote: {text} ({})", location(*s)));
    }
    if let Some(h) = &d.hint {
        msg.push_str(&format!("\nhelp: {h}"));
    }
    if let Some(dir) = manifest_dir() {
        msg = msg.replace(
            &format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR),
            "",
        );
    }
    compile_error(&msg, span)
}

fn compile_error(msg: &str, span: Span) -> TokenStream {
    let span = proc_macro2::Span::from(span);
    quote_spanned!(span=> ::core::compile_error! { #msg }).into()
}

enum Source {
    /// The model text is in the macro call.
    Inline,
    /// The model came from files: track each one with `include_bytes!`.
    File,
}

/// Rust's keywords (strict, reserved, weak ones that can't name a module).
const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// A snake-case Rust identifier for a user name: non-identifier characters become `_`,
/// keywords become raw identifiers (`r#type`) or, where that is not allowed, get a `_`.
fn rust_ident(name: &str) -> proc_macro2::Ident {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if s == "_" || ["self", "super", "crate", "extern"].contains(&s.as_str()) {
        s.push('_');
    }
    if KEYWORDS.contains(&s.as_str()) {
        proc_macro2::Ident::new_raw(&s, proc_macro2::Span::call_site())
    } else {
        format_ident!("{}", s)
    }
}

fn expand(
    program: &Program,
    sources: &SourceMap,
    source: &Source,
    rename: Option<proc_macro2::Ident>,
) -> Tokens {
    let plan = &program.plan;
    let module = rename.unwrap_or_else(|| rust_ident(&plan.name));
    let kernel_items = snnc::back::rust::print_module(program, &quote!(::snn::plan::KernelArgs));
    let kernel_fns = snnc::back::rust::module_kernel_idents(program);
    let kernel_names = program.plan.kernels.iter().map(|k| &k.symbol);
    let plan_bytes = match snn_runtime::plan::encode(plan) {
        Ok(bytes) => proc_macro2::Literal::byte_string(&bytes),
        Err(e) => {
            let msg = e.to_string();
            return quote!(::core::compile_error! { #msg });
        }
    };
    let cuda_source = snnc::back::cuda::print_program(program);
    let train_items = if plan.train.is_some() {
        quote! {
            /// One training step on a labelled batch with the model's `train { }` settings:
            /// forward, loss (and regularisers), backward, gradient clipping, optimizer
            /// step at learning rate `lr` (see [`Network::lr`]). The weights are left
            /// unchanged when the loss is not finite. The step runs on the device: the
            /// session's host copy of the weights is stale until `session_mut().sync_weights()`.
            pub fn train_step(
                &mut self,
                inputs: &[::snn::Tensor],
                labels: &[u32],
                t: usize,
                lr: f32,
            ) -> ::snn::Result<::snn::train::StepStats> {
                self.trainer.step(&mut self.session, inputs, labels, t, lr)
            }

            /// The learning rate of `epoch` (0-based) under the model's schedule and
            /// warm-up.
            pub fn lr(&self, epoch: usize) -> f32 {
                self.trainer.lr(epoch)
            }

            /// The optimizer, schedule and clipping (e.g. to save the optimizer state).
            pub fn trainer(&mut self) -> &mut ::snn::train::Trainer {
                &mut self.trainer
            }
        }
    } else {
        quote!()
    };
    let (trainer_field, trainer_init) = if plan.train.is_some() {
        (
            quote!(trainer: ::snn::train::Trainer,),
            quote!(trainer: ::snn::train::Trainer::new(
                &plan()?.train.as_ref().expect("compiled for training").settings
            ),),
        )
    } else {
        (quote!(), quote!())
    };

    // Make cargo rebuild when a source file changes.
    let tracked: Vec<Tokens> = match source {
        Source::Inline => Vec::new(),
        Source::File => sources
            .files
            .iter()
            .filter_map(|f| f.path.as_deref())
            .map(Path::to_string_lossy)
            .map(|p| {
                let p = p.into_owned();
                quote!(
                    const _: &[u8] = ::core::include_bytes!(#p);
                )
            })
            .collect(),
    };

    // Output fields: sanitized names, deduplicated.
    let mut fields: Vec<proc_macro2::Ident> = Vec::new();
    for o in &plan.outputs {
        let mut id = rust_ident(&o.name);
        let mut n = 2usize;
        while fields.contains(&id) {
            id = format_ident!(
                "{}_{}",
                rust_ident(&o.name).to_string().trim_start_matches("r#"),
                n
            );
            n += 1;
        }
        fields.push(id);
    }
    let output_names: Vec<&String> = plan.outputs.iter().map(|o| &o.name).collect();
    let input_names = plan.inputs.iter().map(|i| &i.name);
    let field_docs = plan.outputs.iter().map(|o| {
        let dims = match o.kind {
            snn_runtime::plan::OutputKind::Counts => "[B, ...]",
            _ => "[T, B, ...]",
        };
        format!(
            " Output `{}` ({:?}), shape `{}` with `...` = {:?}.",
            o.name, o.kind, dims, o.shape
        )
    });
    let name = &plan.name;
    let t = plan.t;
    let batch = plan.batch;
    let seed = plan.seed;
    let doc = format!(" The `{name}` network, compiled from `.snn` by snnc at build time.");

    quote! {
        #[doc = #doc]
        #[allow(
            dead_code, unused_mut, unused_variables, unused_assignments, unused_parens,
            unused_unsafe, unsafe_op_in_unsafe_fn, non_snake_case, non_camel_case_types,
            non_upper_case_globals, clippy::all, clippy::pedantic, clippy::nursery
        )]
        pub mod #module {
            #(#tracked)*

            /// The model's name.
            pub const NAME: &str = #name;
            /// The model's default number of time steps.
            pub const T: usize = #t;
            /// The model's default batch size.
            pub const BATCH: usize = #batch;
            /// The model's seed (weight initialisation).
            pub const SEED: u64 = #seed;
            /// Input names, in the order `forward` takes them.
            pub const INPUTS: &[&str] = &[#(#input_names),*];
            /// Output names, in plan order.
            pub const OUTPUTS: &[&str] = &[#(#output_names),*];

            #kernel_items

            /// The execution plan, exactly as snnc compiled it: decoded from the bytes
            /// embedded at build time on the first call (an `Err`, never a panic, if they
            /// do not decode).
            pub fn plan() -> ::snn::Result<&'static ::snn::plan::Plan> {
                static PLAN: ::snn::plan::EmbeddedPlan = ::snn::plan::EmbeddedPlan::new(#plan_bytes);
                PLAN.get()
            }

            /// The same kernels as CUDA C (the CUDA back end's output), compiled by NVRTC
            /// when [`Network::new_cuda`] is called.
            pub const CUDA_SOURCE: &str = #cuda_source;

            /// The generated kernels, in `plan().kernels` order.
            pub fn kernels() -> ::snn::KernelTable {
                let fns: ::std::vec::Vec<::snn::plan::KernelFn> = ::std::vec![#(#kernel_fns),*];
                ::snn::KernelTable::from_fns(fns)
                    .with_names(::std::vec![#(::std::string::String::from(#kernel_names)),*])
            }

            /// One run's outputs, by name.
            #[derive(Clone, Debug)]
            pub struct Outputs {
                #(#[doc = #field_docs] pub #fields: ::snn::Tensor,)*
            }

            impl Outputs {
                /// The output named as in the model (e.g. `s2.counts`).
                pub fn get(&self, name: &str) -> ::core::option::Option<&::snn::Tensor> {
                    match name {
                        #(#output_names => ::core::option::Option::Some(&self.#fields),)*
                        _ => ::core::option::Option::None,
                    }
                }
                /// `(name, tensor)` pairs in plan order.
                pub fn into_vec(self) -> ::std::vec::Vec<(&'static str, ::snn::Tensor)> {
                    ::std::vec![#((#output_names, self.#fields)),*]
                }
            }

            /// The network: plan, kernels, weights and parameters in a session on the CPU
            /// ([`Network::new`]) or a CUDA GPU ([`Network::new_cuda`]).
            #[derive(Debug)]
            pub struct Network {
                session: ::snn::Session,
                #trainer_field
            }

            impl Network {
                /// A network on the CPU with weights initialised from the model's seed.
                pub fn new() -> ::snn::Result<Network> {
                    ::core::result::Result::Ok(Network {
                        session: ::snn::Session::new(plan()?.clone(), kernels())?,
                        #trainer_init
                    })
                }

                /// A network on CUDA device `ordinal`: [`CUDA_SOURCE`] is compiled by
                /// NVRTC at this call (cached on disk). No driver, no GPU or a compile error
                /// is an `Err` naming the cause.
                pub fn new_cuda(ordinal: usize) -> ::snn::Result<Network> {
                    ::core::result::Result::Ok(Network {
                        session: ::snn::Session::new_cuda(plan()?.clone(), ordinal, CUDA_SOURCE)?,
                        #trainer_init
                    })
                }

                /// A network on the CUDA device with the host standing in for the GPU
                /// (`snn::cuda::ShimGpu`): [`CUDA_SOURCE`] built by the system C++
                /// compiler into `dir` (once per source). Slow; it runs this network's
                /// CUDA path where there is no GPU. No C++ compiler is an `Err`.
                pub fn new_cuda_shim(
                    dir: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::snn::Result<Network> {
                    ::core::result::Result::Ok(Network {
                        session: ::snn::Session::new_cuda_shim(plan()?.clone(), CUDA_SOURCE, dir.as_ref())?,
                        #trainer_init
                    })
                }

                #train_items

                /// Runs `t` steps on a batch of `batch`: one tensor per input, in `INPUTS`
                /// order, `[T, B, ...]` (time-varying) or `[B, ...]`.
                pub fn forward(
                    &mut self,
                    inputs: &[::snn::Tensor],
                    t: usize,
                    batch: usize,
                ) -> ::snn::Result<Outputs> {
                    let mut outs = self.session.run(inputs, t, batch)?.into_iter();
                    ::core::result::Result::Ok(Outputs {
                        #(#fields: outs.next().expect("one tensor per output").1,)*
                    })
                }

                /// Loads weights (and optionally parameters) from a safetensors file.
                pub fn load_weights(
                    &mut self,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::snn::Result<()> {
                    self.session.load_weights(path)
                }

                /// Saves the weights to a safetensors file (after copying them from the
                /// device, where training steps leave them).
                pub fn save_weights(
                    &mut self,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::snn::Result<()> {
                    self.session.sync_weights()?;
                    self.session.save_weights(path)
                }

                /// Sets a neuron parameter (e.g. `s1.tau`) after its check.
                pub fn set_param(&mut self, name: &str, value: f32) -> ::snn::Result<()> {
                    self.session.set_param(name, value)
                }

                /// The underlying session (parameters, weights, random inputs, ...).
                pub fn session(&self) -> &::snn::Session {
                    &self.session
                }

                /// The underlying session, mutably.
                pub fn session_mut(&mut self) -> &mut ::snn::Session {
                    &mut self.session
                }

                /// The underlying session, by value.
                pub fn into_session(self) -> ::snn::Session {
                    self.session
                }
            }
        }
    }
}
