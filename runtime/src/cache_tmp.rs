//! Temporaries of the kernel cache ([`crate::cache_dir`]): an entry is written under a name
//! with the writer's PID (`<key>.tmp-<pid>` or `<key>.tmp-<pid>-<n>`) and renamed into
//! place, so a process killed mid-write leaves its temporary behind. Both caches (the
//! compiler's kernel libraries, the CUDA device's PTX in `ptx/`) sweep those of processes
//! that are gone whenever they are used; a live writer's are never touched.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// The PID in a temporary's name: `<key>.tmp-<pid>` or `<key>.tmp-<pid>-<n>`.
pub fn tmp_pid(name: &str) -> Option<u32> {
    let rest = &name[name.find(".tmp-")? + ".tmp-".len()..];
    rest.split('-').next()?.parse().ok()
}

/// Whether the process `pid` may still be writing: on Linux, whether `/proc/<pid>` exists;
/// elsewhere (or without /proc), whether `path` was touched within the last hour.
fn may_be_alive(pid: u32, path: &Path) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    age.is_none_or(|a| a < Duration::from_secs(3600))
}

/// Removes the temporaries (files or directories) in `dir` whose process is gone.
pub fn remove_stale_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(pid) = e.file_name().to_str().and_then(tmp_pid) else {
            continue;
        };
        if may_be_alive(pid, &path) {
            continue;
        }
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_give_their_pid() {
        assert_eq!(tmp_pid("0123abcd.tmp-4242-3"), Some(4242));
        assert_eq!(tmp_pid("0123abcd.tmp-999999"), Some(999999));
        assert_eq!(tmp_pid("0123abcd"), None);
        assert_eq!(tmp_pid("0123abcd.tmp-x"), None);
    }

    #[test]
    fn stale_files_and_directories_go_live_ones_stay() {
        let dir = std::env::temp_dir().join(format!("snn-cache-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Above Linux's hard PID limit (2^22): no process has it.
        let me = std::process::id();
        let names = [
            ("a.tmp-4999999-0", false),
            (&*format!("a.tmp-{me}-0"), true),
            ("a.ptx", true),
        ];
        for (name, _) in &names {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.join("b.tmp-4999999")).unwrap();
        remove_stale_tmp(&dir);
        for (name, kept) in &names {
            assert_eq!(dir.join(name).exists(), *kept, "{name}");
        }
        assert!(!dir.join("b.tmp-4999999").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
