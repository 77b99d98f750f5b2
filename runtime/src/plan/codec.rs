//! The plan as bytes: how `snn!` embeds a [`Plan`] in the user's crate.
//!
//! The macro encodes the plan it compiled ([`encode`]) into a byte-string literal; the
//! generated `plan()` decodes it on first use ([`EmbeddedPlan`]). The format is postcard
//! (serde, compact, not self-describing) behind a header naming the runtime version that
//! wrote it, so bytes from another version are a clear error rather than a wrong plan.
//! Only declarative plan data is serialized, never [`super::KernelArgs`] or kernel pointers.

use std::sync::OnceLock;

use super::Plan;
use crate::error::{Result, RuntimeError};

/// What the encoded bytes start with: the format and the runtime version that wrote them.
fn header() -> String {
    format!("snn-plan {}\n", env!("CARGO_PKG_VERSION"))
}

/// The plan as bytes: a header (`snn-plan VERSION\n`), then the postcard encoding.
pub fn encode(plan: &Plan) -> Result<Vec<u8>> {
    let mut bytes = header().into_bytes();
    let body = postcard::to_stdvec(plan)
        .map_err(|e| RuntimeError::plan(format!("cannot encode the plan: {e}")))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// The plan [`encode`] wrote; bytes from another runtime version, truncated or corrupt
/// bytes, or trailing bytes are an [`RuntimeError::InvalidPlan`].
pub fn decode(bytes: &[u8]) -> Result<Plan> {
    decode_or_message(bytes).map_err(RuntimeError::InvalidPlan)
}

fn decode_or_message(bytes: &[u8]) -> std::result::Result<Plan, String> {
    let header = header();
    let Some(body) = bytes.strip_prefix(header.as_bytes()) else {
        let found = bytes
            .strip_prefix(b"snn-plan ")
            .and_then(|rest| rest.split(|&b| b == b'\n').next())
            .map(String::from_utf8_lossy);
        return Err(match found {
            Some(version) => format!(
                "the embedded plan was encoded by snn-runtime {version}, this is {} (hint: rebuild the crate that embeds it)",
                env!("CARGO_PKG_VERSION")
            ),
            None => "the embedded bytes are not an encoded plan".to_string(),
        });
    };
    let corrupt = |detail: String| {
        format!("the embedded plan cannot be decoded: {detail} (hint: rebuild the crate that embeds it)")
    };
    super::nesting::take_refusal();
    let (plan, rest) = postcard::take_from_bytes(body)
        .map_err(|e| corrupt(super::nesting::take_refusal().unwrap_or_else(|| e.to_string())))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(plan)
}

/// A plan embedded as bytes, decoded once on first use. `snn!` expands to
/// `static PLAN: EmbeddedPlan = EmbeddedPlan::new(b"...")` and `plan()` calls [`Self::get`].
#[derive(Debug)]
pub struct EmbeddedPlan {
    bytes: &'static [u8],
    /// The decoded plan, or the decoding error's message (kept: every call reports it).
    decoded: OnceLock<std::result::Result<Plan, String>>,
}

impl EmbeddedPlan {
    pub const fn new(bytes: &'static [u8]) -> Self {
        EmbeddedPlan {
            bytes,
            decoded: OnceLock::new(),
        }
    }

    /// The plan, decoded on the first call; an error (never a panic) if the bytes do not
    /// decode.
    pub fn get(&self) -> Result<&Plan> {
        self.decoded
            .get_or_init(|| decode_or_message(self.bytes))
            .as_ref()
            .map_err(|msg| RuntimeError::InvalidPlan(msg.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BufferDecl, Extent, Init, InputDecl, Op, ParamCheck, ParamDecl, WeightDecl};

    fn plan() -> Plan {
        Plan {
            name: "tiny".into(),
            t: 4,
            batch: 2,
            seed: 7,
            buffers: vec![BufferDecl {
                name: "x".into(),
                extent: Extent::Seq,
                features: 3,
                slot: 0,
            }],
            slots: 1,
            weights: vec![WeightDecl {
                name: "fc.weight".into(),
                shape: vec![2, 3],
                init: Init::UniformFanIn {
                    fan_in: 3,
                    gain: 1.5,
                },
            }],
            params: vec![ParamDecl {
                name: "s.tau".into(),
                // Not a number: f32 values travel as their bits.
                value: f32::from_bits(0x7fc0_1234),
                check: ParamCheck::Bits,
            }],
            inputs: vec![InputDecl {
                name: "x".into(),
                buffer: 0,
                shape: vec![3],
                time_varying: true,
            }],
            outputs: vec![],
            kernels: vec![],
            ops: vec![],
            train: None,
            learn: vec![],
        }
    }

    #[test]
    fn round_trip_keeps_every_bit() {
        let p = plan();
        let back = decode(&encode(&p).unwrap()).unwrap();
        assert_eq!(back.params[0].value.to_bits(), 0x7fc0_1234);
        assert_eq!(format!("{back:?}"), format!("{p:?}"));
    }

    #[test]
    fn bad_bytes_are_errors() {
        let bytes = encode(&plan()).unwrap();
        let err = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 3]).contains("cannot be decoded"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(err(&longer).contains("1 trailing bytes"));
        assert!(err(b"garbage").contains("not an encoded plan"));
        let mut other = b"snn-plan 0.0.1\n".to_vec();
        other.extend_from_slice(&bytes[header().len()..]);
        assert!(err(&other).contains("encoded by snn-runtime 0.0.1"));
    }

    #[test]
    fn deeply_nested_step_loops_are_an_error() {
        // fuzz/regressions/data/plan-nested-step-loops overflowed the stack before the bound.
        let nested = |depth: usize| {
            let mut p = plan();
            let mut op = Op::Zero { buf: 0 };
            for i in 0..depth {
                op = if i % 2 == 0 {
                    Op::StepLoop { body: vec![op] }
                } else {
                    Op::ReverseStepLoop { body: vec![op] }
                };
            }
            p.ops = vec![op];
            encode(&p).unwrap()
        };
        // The bound decodes on a test thread's 2 MiB stack.
        let p = decode(&nested(crate::plan::nesting::MAX_LOOP_DEPTH)).unwrap();
        assert_eq!(p.ops.len(), 1);
        let e = decode(&nested(100)).unwrap_err().to_string();
        assert!(e.contains("step loops nested more than 32 deep"), "{e}");
        // The depth is per decode: a refused plan leaves none behind.
        decode(&nested(32)).unwrap();
    }

    #[test]
    fn embedded_plan_decodes_once_and_reports_errors() {
        static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
        let good = EmbeddedPlan::new(GOOD.get_or_init(|| encode(&plan()).unwrap()));
        let first: *const Plan = good.get().unwrap();
        assert!(std::ptr::eq(first, good.get().unwrap()));
        let bad = EmbeddedPlan::new(b"snn-plan");
        for _ in 0..2 {
            let msg = bad.get().unwrap_err().to_string();
            assert_eq!(
                msg,
                "invalid plan: the embedded bytes are not an encoded plan"
            );
        }
    }
}
