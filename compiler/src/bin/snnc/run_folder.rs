//! Where `snnc train` writes a run, so that no run replaces another's files.
//!
//! The policy (README, docs/training.md): a run goes into `--out DIR` or `runs/<model>`; when
//! that folder already holds a run's files (`RUN_FILES`), the run takes the first free
//! numbered sibling (`DIR-2`, `DIR-3`, ...), the way most trainers do. `--resume` continues in the checkpoint's own
//! folder (unless `--out` names another), since it is the same run.

use std::path::{Path, PathBuf};

use snnc::diag::{DResult, Diagnostic, ErrorKind};

/// What `snnc train` writes into its folder: a folder holding any of them holds a run. Other
/// files (a model written beside its outputs) are nobody's run and are left alone.
const RUN_FILES: [&str; 5] = [
    "metrics.csv",
    "checkpoint.safetensors",
    "weights.safetensors",
    "training.svg",
    "raster.svg",
];

/// The folder a run writes into, created (or found empty) and so claimed for this run.
pub struct RunFolder {
    pub dir: PathBuf,
    /// The folder asked for, when it held an earlier run and a numbered one was taken.
    pub instead_of: Option<PathBuf>,
}

/// Decides and creates the run's folder: `out`, else the resumed checkpoint's folder, else
/// `runs/<model>`; numbered when it holds another run's files.
pub fn claim(out: Option<&Path>, resume: Option<&Path>, model: &str) -> DResult<RunFolder> {
    let resumed = resume.map(checkpoint_folder);
    let base = out
        .map(Path::to_path_buf)
        .or_else(|| resumed.clone())
        .unwrap_or_else(|| Path::new("runs").join(model));
    // Resuming writes on in the run it continues.
    if resumed.as_deref().is_some_and(|r| same_folder(r, &base)) {
        std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
        return Ok(RunFolder {
            dir: base,
            instead_of: None,
        });
    }
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    for n in 1.. {
        let dir = numbered(&base, n);
        // `create_dir` fails on an existing folder, so two runs started at once never
        // share a new one; an existing folder without a run's files is taken as is.
        let free = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => holds_no_run(&dir),
            Err(e) => return Err(io_err(&dir, e)),
        };
        if free {
            let instead_of = (n > 1).then(|| base.clone());
            return Ok(RunFolder { dir, instead_of });
        }
    }
    unreachable!("some numbered folder is free")
}

/// `base` for the first run, `base-N` for the N-th.
fn numbered(base: &Path, n: usize) -> PathBuf {
    if n == 1 {
        return base.to_path_buf();
    }
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{n}"));
    base.with_file_name(name)
}

/// The folder holding a checkpoint (`.` for a bare file name).
fn checkpoint_folder(checkpoint: &Path) -> PathBuf {
    match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether two paths name one folder (`runs/a` and `./runs/a/` alike).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

fn holds_no_run(dir: &Path) -> bool {
    dir.is_dir() && RUN_FILES.iter().all(|f| !dir.join(f).exists())
}

fn io_err(path: &Path, e: std::io::Error) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Io,
        format!("cannot create the run folder `{}`: {e}", path.display()),
    )
    .hint("name another folder with `--out DIR`")
}

/// The metrics of the epochs a resumed checkpoint holds: the header and one row per epoch
/// `1..=epoch`, in order. Rows of epochs after the checkpoint (written before a kill, and
/// about to be trained again) and repeated rows are dropped.
pub fn resumed_metrics(old: &str, header: &str, epoch: usize) -> String {
    let mut rows: Vec<Option<&str>> = vec![None; epoch];
    for line in old.lines().skip(1) {
        let e = line
            .split(',')
            .next()
            .and_then(|e| e.trim().parse::<usize>().ok());
        if let Some(e) = e.filter(|e| (1..=epoch).contains(e)) {
            rows[e - 1] = Some(line);
        }
    }
    let mut csv = header.to_string();
    for row in rows.into_iter().flatten() {
        csv.push_str(row);
        csv.push('\n');
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "epoch,lr\n";

    #[test]
    fn resumed_metrics_keep_one_row_per_checkpointed_epoch() {
        let old = "epoch,lr\n1,0.1\n2,0.1\n3,0.1\n2,0.2\n3,0.2\n";
        assert_eq!(resumed_metrics(old, HEAD, 2), "epoch,lr\n1,0.1\n2,0.2\n");
        assert_eq!(resumed_metrics(old, HEAD, 0), HEAD);
        assert_eq!(resumed_metrics("", HEAD, 3), HEAD);
    }

    #[test]
    fn numbered_folders_are_siblings() {
        assert_eq!(numbered(Path::new("runs/yy"), 1), Path::new("runs/yy"));
        assert_eq!(numbered(Path::new("runs/yy"), 3), Path::new("runs/yy-3"));
    }

    #[test]
    fn a_second_run_takes_the_next_free_folder() {
        let root = std::env::temp_dir().join(format!("snnc-run-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let base = root.join("m");
        let first = claim(Some(&base), None, "m").unwrap();
        assert_eq!(first.dir, base);
        assert!(first.instead_of.is_none());
        // Without a run's files (a model beside them is no run): the next run may take it.
        std::fs::write(base.join("m.snn"), "model m {}").unwrap();
        assert_eq!(claim(Some(&base), None, "m").unwrap().dir, base);
        std::fs::write(base.join("metrics.csv"), "x").unwrap();
        let second = claim(Some(&base), None, "m").unwrap();
        assert_eq!(second.dir, root.join("m-2"));
        assert_eq!(second.instead_of.as_deref(), Some(base.as_path()));
        // Resuming the first run writes on in its folder.
        let ck = base.join("checkpoint.safetensors");
        assert_eq!(claim(None, Some(&ck), "m").unwrap().dir, base);
        assert_eq!(claim(Some(&base), Some(&ck), "m").unwrap().dir, base);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
