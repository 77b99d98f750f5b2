//! CUDA back end, plasticity kernels ([`PlasticKernel`]): one thread per postsynaptic map
//! runs the loop nest of `snn_runtime::op::plastic` around the rule's body, in double. The
//! rule's f64 parameters arrive as f32 words holding their bits (`params`); NVRTC compiles
//! with `--fmad=false`, so `w + rate * f` rounds twice, as Spyker's wheel does.

use std::fmt::Write;

use super::cuda::comment_text;
use crate::ir::expr::{print, BinOp, Func, Parens, Syntax, UnOp};
use crate::ir::kernel::PlasticKernel;
use crate::ir::names;
use crate::ir::synapse::{RuleForm, SynAssign, SynLeaf, SynVar};
use snn_runtime::plan::PlasticGeom;

fn param_name(k: &PlasticKernel, i: usize) -> String {
    names::local("p", i, &k.rule.params[i].name)
}

fn local_name(k: &PlasticKernel, i: usize) -> String {
    names::local("l", i, &k.rule.locals[i])
}

fn state_name(k: &PlasticKernel, i: usize) -> String {
    names::local("e", i, &k.rule.states[i].name)
}

/// Loads of synapse `wi`'s states into locals, and the stores back (indented by `ind`).
fn state_io(k: &PlasticKernel, ind: &str) -> (String, String) {
    let (mut loads, mut stores) = (String::new(), String::new());
    for i in 0..k.rule.states.len() {
        let v = state_name(k, i);
        let _ = writeln!(loads, "{ind}double {v} = (double)st{i}[wi];");
        let _ = writeln!(stores, "{ind}st{i}[wi] = (float){v};");
    }
    (loads, stores)
}

fn pre_name(k: &PlasticKernel, i: usize) -> String {
    names::local("a", i, &k.rule.pre_states[i].name)
}

fn post_name(k: &PlasticKernel, i: usize) -> String {
    names::local("q", i, &k.rule.post_states[i].name)
}

/// The statements of one block, one per line.
fn block(k: &PlasticKernel, body: &[SynAssign]) -> String {
    let mut out = String::new();
    for a in body {
        let v = print(&Rule(k), &a.value);
        let target = match a.target {
            SynVar::W => "s_w".to_string(),
            SynVar::Local(i) => local_name(k, i),
            SynVar::State(i) => state_name(k, i),
            SynVar::PreState(i) => pre_name(k, i),
            SynVar::PostState(i) => post_name(k, i),
        };
        let _ = writeln!(out, "{target} = {v};");
    }
    out
}

/// `text` with every line indented by `ind`.
fn indent(text: &str, ind: &str) -> String {
    text.lines().map(|l| format!("{ind}{l}\n")).collect()
}

/// An exact double literal: small integers in decimal, else a hex float.
pub fn f64_literal(v: f64) -> String {
    if v.is_nan() {
        return "(0.0 / 0.0)".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "(1.0 / 0.0)"
        } else {
            "(-1.0 / 0.0)"
        }
        .into();
    }
    let a = v.abs();
    let body = if a == a.trunc() && a < 9.0e15 {
        format!("{a:.1}")
    } else {
        let bits = a.to_bits();
        let e = ((bits >> 52) & 0x7ff) as i64;
        let m = bits & ((1u64 << 52) - 1);
        let (lead, exp) = if e == 0 { (0, -1022) } else { (1, e - 1023) };
        let frac = format!("{m:013x}");
        let frac = frac.trim_end_matches('0');
        let hex = if frac.is_empty() {
            format!("0x{lead}p{exp:+}")
        } else {
            format!("0x{lead}.{frac}p{exp:+}")
        };
        format!("{hex} /* {a:?} */")
    };
    if v.is_sign_negative() {
        format!("(-{body})")
    } else {
        body
    }
}

fn cond(c: String) -> String {
    format!("({c} ? 1.0 : 0.0)")
}

/// CUDA C spellings of a rule's expressions, in double.
struct Rule<'a>(&'a PlasticKernel);

impl Syntax<SynLeaf> for Rule<'_> {
    type Out = String;
    fn parens(&self) -> Parens {
        Parens::Spelled
    }
    fn constant(&self, c: f32) -> String {
        f64_literal(c as f64)
    }
    fn leaf(&self, l: &SynLeaf) -> String {
        match l {
            SynLeaf::Param(i) => param_name(self.0, *i),
            SynLeaf::W => "s_w".into(),
            SynLeaf::TPre => "s_t_pre".into(),
            SynLeaf::TPost => "s_t_post".into(),
            SynLeaf::Reward => "s_reward".into(),
            SynLeaf::Steps => "s_steps".into(),
            SynLeaf::Local(i) => local_name(self.0, *i),
            SynLeaf::State(i) => state_name(self.0, *i),
            SynLeaf::PreState(i) => pre_name(self.0, *i),
            SynLeaf::PostState(i) => post_name(self.0, *i),
            SynLeaf::SPre => "s_s_pre".into(),
            SynLeaf::SPost => "s_s_post".into(),
        }
    }
    fn unary(&self, op: UnOp, x: String) -> String {
        match op {
            UnOp::Neg => format!("(-{x})"),
            UnOp::Not => cond(format!("{x} == 0.0")),
        }
    }
    fn binary(&self, op: BinOp, a: String, b: String) -> String {
        match op {
            BinOp::Add => format!("({a} + {b})"),
            BinOp::Sub => format!("({a} - {b})"),
            BinOp::Mul => format!("({a} * {b})"),
            BinOp::Div => format!("({a} / {b})"),
            BinOp::Pow => format!("pow({a}, {b})"),
            BinOp::Lt => cond(format!("{a} < {b}")),
            BinOp::Le => cond(format!("{a} <= {b}")),
            BinOp::Gt => cond(format!("{a} > {b}")),
            BinOp::Ge => cond(format!("{a} >= {b}")),
            BinOp::Eq => cond(format!("{a} == {b}")),
            BinOp::Ne => cond(format!("{a} != {b}")),
            BinOp::And => cond(format!("{a} != 0.0 && {b} != 0.0")),
            BinOp::Or => cond(format!("{a} != 0.0 || {b} != 0.0")),
        }
    }
    fn call(&self, f: Func, a: Vec<String>) -> String {
        match f {
            Func::Exp => format!("exp({})", a[0]),
            Func::Log => format!("log({})", a[0]),
            Func::Sqrt => format!("sqrt({})", a[0]),
            Func::Abs => format!("fabs({})", a[0]),
            Func::Tanh => format!("tanh({})", a[0]),
            Func::Floor => format!("floor({})", a[0]),
            Func::Sigmoid => format!("(1.0 / (1.0 + exp((-{}))))", a[0]),
            Func::Step => cond(format!("{} >= 0.0", a[0])),
            Func::Min => format!("fmin({}, {})", a[0], a[1]),
            Func::Max => format!("fmax({}, {})", a[0], a[1]),
            Func::Select => format!("({} != 0.0 ? {} : {})", a[0], a[1], a[2]),
            // Spyker's `max(lower, min(x, upper))`.
            Func::Clamp => format!("fmax({}, fmin({}, {}))", a[1], a[0], a[2]),
        }
    }
    fn group(&self, x: String) -> String {
        format!("({x})")
    }
}

/// One plasticity kernel as a CUDA `__global__` function (its arguments: the five buffer
/// pointers, the parameter words, then `t_len, t_step, batch, features, lo, hi`).
pub fn print_kernel(k: &PlasticKernel) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// {}: {} (one thread per postsynaptic map, samples in order)",
        k.symbol,
        comment_text(&k.doc)
    );
    let _ = writeln!(s, "extern \"C\" __global__ void {}(", k.symbol);
    s.push_str(
        "    float* __restrict__ w,\n\
         \x20   const float* __restrict__ pre,\n\
         \x20   const float* __restrict__ post,\n\
         \x20   const float* __restrict__ gate,\n\
         \x20   const float* __restrict__ reward,\n",
    );
    for i in 0..k.rule.states.len() {
        let _ = writeln!(s, "    float* __restrict__ st{i},");
    }
    s.push_str(
        "    const float* __restrict__ params,\n\
         \x20   unsigned long long t_len,\n\
         \x20   unsigned long long t_step,\n\
         \x20   unsigned long long batch,\n\
         \x20   unsigned long long features,\n\
         \x20   unsigned long long lo,\n\
         \x20   unsigned long long hi)\n{\n",
    );
    s.push_str(
        "    const unsigned long long o = lo + (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n\
         \x20   if (o >= hi) return;\n\
         \x20   const double* pp = (const double*)params;\n\
         \x20   const double s_steps = (double)t_len;\n",
    );
    for i in 0..k.rule.params.len() {
        let _ = writeln!(s, "    const double {} = pp[{i}];", param_name(k, i));
    }
    let pre_f = k.geom.pre_features();
    let post_f = k.geom.post_features();
    // The first step at which buf[t * stride + at] is non-zero, t_len if none.
    let first = |buf: &str, feats: usize, at: &str| {
        format!("snn_first_spike({buf}, t_len, batch * {feats}ull, b * {feats}ull + {at})")
    };
    let mut body = String::new();
    for i in 0..k.rule.locals.len() {
        let _ = writeln!(body, "double {} = 0.0;", local_name(k, i));
    }
    body.push_str(&block(k, &k.rule.on_post));
    let update = |ind: &str| {
        let (loads, stores) = state_io(k, ind);
        let mut u = format!("{ind}double s_w = (double)w[wi];\n{loads}");
        for line in body.lines() {
            let _ = writeln!(u, "{ind}{line}");
        }
        let _ = writeln!(u, "{ind}w[wi] = (float)s_w;");
        u.push_str(&stores);
        u
    };
    let event = |ind: &str| {
        if k.gate {
            format!(
                "{ind}if (gate[b * {post_f}ull + n] == 0.0f) continue;\n\
                 {ind}const unsigned long long t_post = {};\n",
                first("post", post_f, "n")
            )
        } else {
            format!(
                "{ind}const unsigned long long t_post = {};\n\
                 {ind}if (t_post >= t_len) continue;\n",
                first("post", post_f, "n")
            )
        }
    };
    if k.rule.form == RuleForm::PerStep {
        s.push_str(&per_step_loops(k, &body_locals(k)));
        s.push_str("}\n");
        return s;
    }
    s.push_str("    for (unsigned long long b = 0; b < batch; ++b) {\n");
    if k.reward {
        s.push_str("        const double s_reward = (double)reward[b];\n");
    }
    match k.geom {
        PlasticGeom::Dense { inputs, .. } => {
            s.push_str("        const unsigned long long n = o;\n");
            s.push_str("        do {\n");
            s.push_str(&event("            "));
            s.push_str("            const double s_t_post = (double)t_post;\n");
            let _ = writeln!(
                s,
                "            for (unsigned long long i = 0; i < {inputs}ull; ++i) {{"
            );
            let _ = writeln!(
                s,
                "                const double s_t_pre = (double){};",
                first("pre", pre_f, "i")
            );
            let _ = writeln!(
                s,
                "                const unsigned long long wi = o * {inputs}ull + i;"
            );
            s.push_str(&update("                "));
            s.push_str("            }\n        } while (0);\n");
        }
        PlasticGeom::Conv(g) => {
            let _ = writeln!(
                s,
                "        for (unsigned long long y = 0; y < {}ull; ++y)\n        for (unsigned long long x = 0; x < {}ull; ++x) {{",
                g.h_out, g.w_out
            );
            let _ = writeln!(
                s,
                "            const unsigned long long n = (o * {}ull + y) * {}ull + x;",
                g.h_out, g.w_out
            );
            s.push_str(&event("            "));
            s.push_str("            const double s_t_post = (double)t_post;\n");
            let _ = writeln!(
                s,
                "            for (unsigned long long c = 0; c < {}ull; ++c)\n            for (unsigned long long ky = 0; ky < {}ull; ++ky)\n            for (unsigned long long kx = 0; kx < {}ull; ++kx) {{",
                g.c_in, g.kh, g.kw
            );
            let _ = writeln!(
                s,
                "                // Zero padding never spikes (an unsigned wrap is out of range).\n\
                 \x20               const unsigned long long iy = y * {s}ull + ky - {p}ull;\n\
                 \x20               const unsigned long long ix = x * {s}ull + kx - {p}ull;",
                s = g.stride,
                p = g.pad
            );
            let _ = writeln!(
                s,
                "                const double s_t_pre = (double)((iy < {h}ull && ix < {w}ull) ? {} : t_len);",
                first("pre", pre_f, &format!("(c * {h}ull + iy) * {w}ull + ix", h = g.h, w = g.w)),
                h = g.h,
                w = g.w
            );
            let _ = writeln!(
                s,
                "                const unsigned long long wi = ((o * {}ull + c) * {}ull + ky) * {}ull + kx;",
                g.c_in, g.kh, g.kw
            );
            s.push_str(&update("                "));
            s.push_str("            }\n        }\n");
        }
    }
    s.push_str("    }\n}\n");
    s
}

/// The rule's `let` temporaries, declared at the top of a block's run.
fn body_locals(k: &PlasticKernel) -> String {
    (0..k.rule.locals.len())
        .map(|i| format!("double {} = 0.0;\n", local_name(k, i)))
        .collect()
}

/// Per-step rules: each synapse of map `o` sums its changes over the batch (and a
/// convolution's positions), then adds them once.
fn per_step_loops(k: &PlasticKernel, locals: &str) -> String {
    let pre_f = k.geom.pre_features();
    let post_f = k.geom.post_features();
    let mut pair = String::new();
    for (i, st) in k.rule.pre_states.iter().enumerate() {
        let _ = writeln!(
            pair,
            "double {} = {};",
            pre_name(k, i),
            print(&Rule(k), &st.init)
        );
    }
    for (i, st) in k.rule.post_states.iter().enumerate() {
        let _ = writeln!(
            pair,
            "double {} = {};",
            post_name(k, i),
            print(&Rule(k), &st.init)
        );
    }
    pair.push_str("for (unsigned long long t = 0; t < t_len; ++t) {\n");
    let _ = writeln!(
        pair,
        "    const double s_s_pre = live ? (double)pre[(t * batch + b) * {pre_f}ull + p] : 0.0;"
    );
    let _ = writeln!(
        pair,
        "    const double s_s_post = (double)post[(t * batch + b) * {post_f}ull + n];"
    );
    if !k.rule.on_step.is_empty() {
        pair.push_str("    {\n        const double s_w = w0;\n");
        pair.push_str(&indent(locals, "        "));
        pair.push_str(&indent(&block(k, &k.rule.on_step), "        "));
        pair.push_str("    }\n");
    }
    // A gate lets through only the postsynaptic events of the neurons it selects.
    let post_cond = if k.gate {
        format!("s_s_post != 0.0 && gate[b * {post_f}ull + n] != 0.0f")
    } else {
        "s_s_post != 0.0".to_string()
    };
    for (cond, body) in [
        ("s_s_pre != 0.0".to_string(), &k.rule.on_pre),
        (post_cond, &k.rule.on_post),
    ] {
        if body.is_empty() {
            continue;
        }
        let _ = writeln!(pair, "    if ({cond}) {{\n        double s_w = w0;");
        pair.push_str(&indent(locals, "        "));
        pair.push_str(&indent(&block(k, body), "        "));
        pair.push_str("        acc += s_w - w0;\n    }\n");
    }
    pair.push_str("}\n");
    let reward = if k.reward {
        "const double s_reward = (double)reward[b];\n"
    } else {
        ""
    };
    let (loads, stores) = state_io(k, "        ");
    let mut s = String::new();
    match k.geom {
        PlasticGeom::Dense { inputs, .. } => {
            let _ = writeln!(
                s,
                "    for (unsigned long long p = 0; p < {inputs}ull; ++p) {{\n\
                 \x20       const unsigned long long wi = o * {inputs}ull + p;\n\
                 \x20       const double w0 = (double)w[wi];\n\
                 \x20       double acc = 0.0;\n\
                 {loads}\
                 \x20       for (unsigned long long b = 0; b < batch; ++b) {{"
            );
            s.push_str(&indent(reward, "            "));
            s.push_str("            const unsigned long long n = o;\n            const bool live = true;\n");
            s.push_str(&indent(&pair, "            "));
            s.push_str("        }\n        w[wi] = (float)(w0 + acc);\n");
            s.push_str(&stores);
            s.push_str("    }\n");
        }
        PlasticGeom::Conv(g) => {
            let _ = writeln!(
                s,
                "    for (unsigned long long c = 0; c < {c}ull; ++c)\n\
                 \x20   for (unsigned long long ky = 0; ky < {kh}ull; ++ky)\n\
                 \x20   for (unsigned long long kx = 0; kx < {kw}ull; ++kx) {{\n\
                 \x20       const unsigned long long wi = ((o * {c}ull + c) * {kh}ull + ky) * {kw}ull + kx;\n\
                 \x20       const double w0 = (double)w[wi];\n\
                 \x20       double acc = 0.0;\n\
                 {loads}\
                 \x20       for (unsigned long long b = 0; b < batch; ++b) {{",
                c = g.c_in,
                kh = g.kh,
                kw = g.kw
            );
            s.push_str(&indent(reward, "            "));
            let _ = writeln!(
                s,
                "            for (unsigned long long y = 0; y < {ho}ull; ++y)\n\
                 \x20           for (unsigned long long x = 0; x < {wo}ull; ++x) {{\n\
                 \x20               const unsigned long long n = (o * {ho}ull + y) * {wo}ull + x;\n\
                 \x20               // Zero padding never spikes (an unsigned wrap is out of range).\n\
                 \x20               const unsigned long long iy = y * {st}ull + ky - {pad}ull;\n\
                 \x20               const unsigned long long ix = x * {st}ull + kx - {pad}ull;\n\
                 \x20               const bool live = iy < {h}ull && ix < {w}ull;\n\
                 \x20               const unsigned long long p = live ? (c * {h}ull + iy) * {w}ull + ix : 0ull;",
                ho = g.h_out,
                wo = g.w_out,
                st = g.stride,
                pad = g.pad,
                h = g.h,
                w = g.w
            );
            s.push_str(&indent(&pair, "                "));
            s.push_str("            }\n        }\n        w[wi] = (float)(w0 + acc);\n");
            s.push_str(&stores);
            s.push_str("    }\n");
        }
    }
    s
}
