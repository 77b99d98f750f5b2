//! Front end: read `.snn` text (files with `include`s, or a string), parse it with pest and
//! return ASTs. The built-in neuron prelude is always file 0.

pub mod ast;
pub mod depth;
pub mod dump;
pub mod parse;

use std::path::{Path, PathBuf};

use crate::diag::{DResult, Diagnostic, ErrorKind, FileId, SourceMap, Span};

/// The built-in neuron models, written in the language itself.
pub const PRELUDE: &str = include_str!("../prelude.snn");

/// Every parsed file of one compilation, in load order (prelude first, root last).
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub files: Vec<(FileId, ast::File)>,
    pub root: FileId,
}

fn load_prelude(sources: &mut SourceMap, out: &mut Parsed) -> DResult<()> {
    let id = sources.add("<prelude>".into(), None, PRELUDE.to_string());
    out.files.push((id, parse::parse_file(id, PRELUDE)?));
    Ok(())
}

/// Load a root file from disk with everything it includes.
pub fn load_file(sources: &mut SourceMap, path: &Path) -> DResult<Parsed> {
    let mut out = Parsed::default();
    load_prelude(sources, &mut out)?;
    let mut stack = Vec::new();
    out.root = load_rec(
        sources,
        &mut out,
        path,
        path.display().to_string(),
        None,
        &mut stack,
    )?;
    Ok(out)
}

/// Load source text that is not on disk (tests, the `snn!` macro). Includes resolve
/// relative to `base_dir`.
pub fn load_str(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
    base_dir: Option<&Path>,
) -> DResult<Parsed> {
    let mut out = Parsed::default();
    load_prelude(sources, &mut out)?;
    let text = without_bom(text);
    let id = sources.add(name.to_string(), None, text.to_string());
    let file = parse::parse_file(id, text)?;
    let mut stack = vec![PathBuf::from(name)];
    let dir = base_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for inc in &file.includes {
        include(sources, &mut out, &dir, inc, &mut stack)?;
    }
    out.files.push((id, file));
    out.root = id;
    Ok(out)
}

fn load_rec(
    sources: &mut SourceMap,
    out: &mut Parsed,
    path: &Path,
    display: String,
    from: Option<Span>,
    stack: &mut Vec<PathBuf>,
) -> DResult<FileId> {
    let canon = match path.canonicalize() {
        Ok(c) => c,
        Err(e) => {
            let mut d = Diagnostic::new(
                ErrorKind::MissingFile,
                format!("cannot open `{display}`: {}", io_reason(&e)),
            );
            if let Some(sp) = from {
                d = d.at(sp, "included here");
            }
            return Err(d.hint("check the path; includes are relative to the including file"));
        }
    };
    if let Some(pos) = stack.iter().position(|p| *p == canon) {
        let cycle: Vec<String> = stack[pos..]
            .iter()
            .chain(std::iter::once(&canon))
            .map(|p| {
                p.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let mut d = Diagnostic::new(
            ErrorKind::Include,
            format!("recursive include: {}", cycle.join(" -> ")),
        );
        if let Some(sp) = from {
            d = d.at(sp, "this include closes the cycle");
        }
        return Err(d.hint("move the shared definitions into a third file that both include"));
    }
    if let Some(id) = sources.find(&canon) {
        return Ok(id); // already loaded (diamond include)
    }
    let bytes = std::fs::read(&canon).map_err(|e| {
        let mut d = Diagnostic::new(
            ErrorKind::Io,
            format!("cannot read `{display}`: {}", io_reason(&e)),
        );
        if let Some(sp) = from {
            d = d.at(sp, "included here");
        }
        d
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Keep the file (lossily) so the error points at the first bad byte.
            let at = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[at];
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let id = sources.add(display.clone(), Some(canon), lossy);
            let span = Span::new(id, at, at + '\u{fffd}'.len_utf8());
            return Err(Diagnostic::new(
                ErrorKind::Io,
                format!("`{display}` is not valid UTF-8 (byte 0x{byte:02x})"),
            )
            .at(span, "not UTF-8")
            .hint("save the file as UTF-8"));
        }
    };
    let id = sources.add(display, Some(canon.clone()), without_bom(&text).to_string());
    let file = parse::parse_file(id, &sources.file(id).text.clone())?;
    stack.push(canon.clone());
    let dir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
    for inc in &file.includes {
        include(sources, out, &dir, inc, stack)?;
    }
    stack.pop();
    out.files.push((id, file));
    Ok(id)
}

fn include(
    sources: &mut SourceMap,
    out: &mut Parsed,
    dir: &Path,
    inc: &ast::Include,
    stack: &mut Vec<PathBuf>,
) -> DResult<()> {
    let p = dir.join(&inc.path);
    load_rec(sources, out, &p, inc.path.clone(), Some(inc.span), stack).map(|_| ())
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Source text without a leading UTF-8 byte-order mark, which some editors write and
/// which means nothing in a `.snn` file.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}
