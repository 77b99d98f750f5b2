//! Source files, spans and diagnostics.
//!
//! Every AST and IR node carries a [`Span`] (file id + byte range); every user error is a
//! [`Diagnostic`] that points back into the source and is rendered with file:line:col, the
//! source line, a caret and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }
    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Name shown in diagnostics (the path as the user gave it, or `<prelude>`).
    pub name: String,
    /// Canonical path on disk, when the file came from disk.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// All source text of one compilation.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    pub files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, name: String, path: Option<PathBuf>, text: String) -> FileId {
        self.files.push(SourceFile { name, path, text });
        FileId(self.files.len() as u32 - 1)
    }
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
    /// The file a span points into, if this map holds it: a diagnostic from a model compiled
    /// elsewhere (bench, macro) may carry a span of another map.
    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }
    /// Whether `span` lies inside a file of this map, on character boundaries.
    pub fn contains(&self, span: Span) -> bool {
        self.get(span.file).is_some_and(|f| {
            span.start <= span.end
                && f.text.is_char_boundary(span.start as usize)
                && f.text.is_char_boundary(span.end as usize)
        })
    }
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path.as_deref() == Some(path))
            .map(|i| FileId(i as u32))
    }
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: u32) -> (usize, usize) {
        let Some(f) = self.get(file) else {
            return (1, 1);
        };
        let text = &f.text;
        let mut offset = (offset as usize).min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = text[line_start..offset].chars().count() + 1;
        (line, col)
    }
    /// `file:line:col` of a span's start.
    pub fn location(&self, span: Span) -> String {
        let Some(f) = self.get(span.file) else {
            return "<unknown source>".into();
        };
        let (l, c) = self.line_col(span.file, span.start);
        format!("{}:{}:{}", f.name, l, c)
    }
    pub fn snippet(&self, span: Span) -> &str {
        if !self.contains(span) {
            return "";
        }
        let text = &self.file(span.file).text;
        let s = (span.start as usize).min(text.len());
        let e = (span.end as usize).min(text.len()).max(s);
        &text[s..e]
    }
}

/// The class of a user error; tests match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Syntax,
    UnknownName,
    UnknownModel,
    Duplicate,
    Shape,
    BadValue,
    BadArgument,
    Cycle,
    Include,
    MissingFile,
    Io,
    Weights,
    Runtime,
    Build,
    /// A model too large for the memory budget, or an element count past 64 bits.
    Memory,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "E-syntax",
            ErrorKind::UnknownName => "E-unknown-name",
            ErrorKind::UnknownModel => "E-unknown-model",
            ErrorKind::Duplicate => "E-duplicate",
            ErrorKind::Shape => "E-shape",
            ErrorKind::BadValue => "E-bad-value",
            ErrorKind::BadArgument => "E-bad-argument",
            ErrorKind::Cycle => "E-cycle",
            ErrorKind::Include => "E-include",
            ErrorKind::MissingFile => "E-missing-file",
            ErrorKind::Io => "E-io",
            ErrorKind::Weights => "E-weights",
            ErrorKind::Runtime => "E-runtime",
            ErrorKind::Build => "E-build",
            ErrorKind::Memory => "E-memory",
        }
    }
}

/// A user-facing error.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    /// Where it happened; `None` for errors outside any source (e.g. a weights file).
    pub span: Option<Span>,
    /// Short text under the caret.
    pub label: String,
    pub hint: Option<String>,
    /// Secondary locations, e.g. the definition a use refers to.
    pub notes: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            kind,
            message: message.into(),
            span: None,
            label: String::new(),
            hint: None,
            notes: Vec::new(),
        }
    }
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.span = Some(span);
        self.label = label.into();
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
    pub fn note(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.notes.push((span, text.into()));
        self
    }

    /// Render for a terminal: `error[E-..]: message`, `--> file:line:col`, the source line
    /// with a caret, and the hint.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let Some(span) = self.span else {
            let mut s = format!("error[{}]: {}\n", self.kind.code(), self.message);
            if let Some(h) = &self.hint {
                s.push_str(&format!("  = hint: {h}\n"));
            }
            return s;
        };
        // A span this map cannot show (another compilation's, or out of range): no snippet.
        if !sources.contains(span) {
            return Diagnostic {
                span: None,
                ..self.clone()
            }
            .render(sources, color);
        }
        use ariadne::{Config, Label, Report, ReportKind};
        let name = |id: FileId| sources.file(id).name.clone();
        let mut cache = ariadne::sources(
            sources
                .files
                .iter()
                .map(|f| (f.name.clone(), f.text.clone())),
        );
        let range = |sp: Span| {
            // ariadne counts characters, not bytes.
            let text = &sources.file(sp.file).text;
            let s = text[..(sp.start as usize).min(text.len())].chars().count();
            let e = text[..(sp.end as usize).min(text.len())].chars().count();
            s..e.max(s + 1)
        };
        let mut report = Report::build(ReportKind::Error, (name(span.file), range(span)))
            .with_code(self.kind.code())
            .with_message(format!("{}  ({})", self.message, sources.location(span)))
            .with_config(Config::default().with_color(color))
            .with_label(Label::new((name(span.file), range(span))).with_message(&self.label));
        for (sp, text) in self.notes.iter().filter(|(sp, _)| sources.contains(*sp)) {
            report = report.with_label(Label::new((name(sp.file), range(*sp))).with_message(text));
        }
        if let Some(h) = &self.hint {
            report = report.with_help(h);
        }
        let mut out = Vec::new();
        if report.finish().write(&mut cache, &mut out).is_err() {
            return self.plain(sources);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One-paragraph plain form: `file:line:col: error[code]: message (hint: ...)`.
    pub fn plain(&self, sources: &SourceMap) -> String {
        let loc = self
            .span
            .filter(|s| sources.contains(*s))
            .map(|s| format!("{}: ", sources.location(s)))
            .unwrap_or_default();
        let hint = self
            .hint
            .as_ref()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        format!("{loc}error[{}]: {}{hint}", self.kind.code(), self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.kind.code(), self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

pub type DResult<T> = Result<T, Diagnostic>;

/// The closest candidate by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&name.to_lowercase(), &c.to_lowercase());
        // Ties go to the alphabetically first name, so hints do not depend on hash order.
        if d <= (name.len().max(2) / 2).max(1)
            && best.is_none_or(|(bd, bc)| d < bd || (d == bd && c < bc))
        {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Optimal string alignment distance: edits, with a swap of neighbours counting as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span of another compilation's map, or past the end of its file, renders without a
    /// snippet instead of panicking.
    #[test]
    fn render_survives_foreign_and_out_of_range_spans() {
        let d = Diagnostic::new(ErrorKind::BadValue, "T must be a whole number")
            .at(Span::new(FileId(3), 5, 9), "here")
            .note(Span::new(FileId(7), 0, 1), "there")
            .hint("e.g. `T = 25`");
        let empty = SourceMap::default();
        let r = d.render(&empty, false);
        assert!(
            r.contains("T must be a whole number") && r.contains("T = 25"),
            "{r}"
        );
        assert!(d.plain(&empty).starts_with("error[E-bad-value]"));
        let mut one = SourceMap::default();
        let id = one.add("a.snn".into(), None, "ab".into());
        let past = Diagnostic::new(ErrorKind::Syntax, "oops").at(Span::new(id, 10, 12), "x");
        assert!(past.render(&one, false).contains("oops"));
        let split = Diagnostic::new(ErrorKind::Syntax, "oops");
        let mut utf = SourceMap::default();
        let id = utf.add("u.snn".into(), None, "é".into());
        assert!(split
            .at(Span::new(id, 1, 2), "x")
            .render(&utf, false)
            .contains("oops"));
        assert_eq!(utf.location(Span::new(id, 1, 2)), "u.snn:1:1");
    }
}
