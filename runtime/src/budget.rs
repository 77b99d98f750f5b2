//! The memory budget: how many bytes a session may allocate for a model (weights, gradients,
//! optimizer state, buffer slots, host copies of inputs and outputs). A plan is sized against
//! it before anything is allocated (see [`crate::exec::footprint`]), so a gigantic layer or
//! batch is an error naming the bytes, never an allocation that aborts the process.
//!
//! The default is [`DEFAULT_PERCENT`] of the machine's physical memory (`MemTotal` in
//! `/proc/meminfo`; [`FALLBACK_BYTES`] where that cannot be read). `MemTotal` rather than
//! `MemAvailable`: a limit that moves with whatever else runs would make the same command
//! pass or fail at random. [`ENV_VAR`] or [`Budget::set_process_default`] (the CLI's
//! `--max-memory`) replace it.

use std::fmt;
use std::sync::Mutex;

/// The environment variable that sets the default budget, e.g. `SNN_MAX_MEMORY=8G`.
pub const ENV_VAR: &str = "SNN_MAX_MEMORY";
/// The share of physical memory a model may take by default.
pub const DEFAULT_PERCENT: u64 = 80;
/// Physical memory assumed where it cannot be read (8 GB).
pub const FALLBACK_BYTES: u64 = 8_000_000_000;

/// A byte limit and where it came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: BudgetSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// [`DEFAULT_PERCENT`] of `total` bytes of physical memory.
    Physical { total: u64 },
    /// Physical memory unknown: [`DEFAULT_PERCENT`] of [`FALLBACK_BYTES`].
    Fallback,
    /// Given by the user: the flag or variable that set it, e.g. `--max-memory`.
    Given(String),
}

/// The budget [`Budget::set_process_default`] installed, if any.
static PROCESS_DEFAULT: Mutex<Option<Budget>> = Mutex::new(None);

impl Budget {
    /// `bytes`, set by `what` (e.g. `--max-memory`).
    pub fn given(bytes: u64, what: &str) -> Budget {
        Budget {
            bytes,
            source: BudgetSource::Given(what.to_string()),
        }
    }

    /// The budget a new session takes: the process default if one was installed, else
    /// [`ENV_VAR`] when set and valid, else a share of physical memory.
    pub fn current() -> Budget {
        if let Some(b) = PROCESS_DEFAULT.lock().ok().and_then(|g| g.clone()) {
            return b;
        }
        if let Some(b) = std::env::var(ENV_VAR)
            .ok()
            .and_then(|v| parse_size(&v).ok())
        {
            return Budget::given(b, ENV_VAR);
        }
        Budget::physical()
    }

    /// [`DEFAULT_PERCENT`] of physical memory.
    pub fn physical() -> Budget {
        match physical_memory() {
            Some(total) => Budget {
                bytes: total / 100 * DEFAULT_PERCENT,
                source: BudgetSource::Physical { total },
            },
            None => Budget {
                bytes: FALLBACK_BYTES / 100 * DEFAULT_PERCENT,
                source: BudgetSource::Fallback,
            },
        }
    }

    /// Makes `budget` what [`Budget::current`] returns in this process (the CLI's
    /// `--max-memory`); `None` restores the default.
    pub fn set_process_default(budget: Option<Budget>) {
        if let Ok(mut g) = PROCESS_DEFAULT.lock() {
            *g = budget;
        }
    }
}

/// `19.2 GB: 80% of 24.0 GB physical memory`, `1.0 GB: --max-memory`.
impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", fmt_bytes(self.bytes))?;
        match &self.source {
            BudgetSource::Physical { total } => write!(
                f,
                "{DEFAULT_PERCENT}% of {} physical memory",
                fmt_bytes(*total)
            ),
            BudgetSource::Fallback => write!(
                f,
                "{DEFAULT_PERCENT}% of an assumed {} (physical memory unknown)",
                fmt_bytes(FALLBACK_BYTES)
            ),
            BudgetSource::Given(what) => write!(f, "{what}"),
        }
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// A size as the user writes it: `1000000` (bytes), `512K`, `512M`, `8G`, `1T` (powers of
/// 1000, as [`fmt_bytes`] prints; a trailing `B` is allowed: `8GB`), `8GiB` (powers of
/// 1024), with an optional fraction (`1.5G`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size (e.g. 1000000, 512M, 8G, 8GiB)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 1000000, 512M, 8G, 8GiB)"))?;
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!(
            "`{s}`: a size must be at least 1 byte and below 16 EB"
        ));
    }
    Ok(bytes as u64)
}

/// `512 B`, `1.5 kB`, `160.0 GB` (powers of 1000); the saturated `u64::MAX` of an estimate
/// that overflowed prints as `more than 18.4 EB`.
pub fn fmt_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 18.4 EB".into();
    }
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("512M"), Ok(512_000_000));
        assert_eq!(parse_size("8G"), Ok(8_000_000_000));
        assert_eq!(parse_size("8gb"), Ok(8_000_000_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn bytes_print() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1500), "1.5 kB");
        assert_eq!(fmt_bytes(160_000_000_000), "160.0 GB");
        assert_eq!(fmt_bytes(999_990_000), "1.0 GB");
        assert_eq!(fmt_bytes(u64::MAX), "more than 18.4 EB");
    }

    #[test]
    fn physical_default_is_a_share_of_memory() {
        let b = Budget::physical();
        assert!(b.bytes > 0);
        assert!(b.to_string().contains("80% of"), "{b}");
    }
}
