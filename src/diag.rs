//! Source locations and user-facing diagnostics.
//!
//! Every error caused by user input (model files, population files, trial specs, datasets) is
//! reported as a [`Diagnostic`] naming the file, the 1-based line and the 1-based column. This
//! module owns the offset → line:col mapping; it never decides what is an error.

use std::fmt;

/// A byte range `[start, end)` in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A named source text, able to turn byte offsets into line and column numbers.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; columns count characters, not bytes.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }

    /// A diagnostic located at the start of `span`.
    pub fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.line_col(span.start);
        Diagnostic {
            file: self.name.clone(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// An error in user input, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 for the file as a whole (one that cannot be read).
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: about the file as a whole (one that cannot be read), no place in it.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a text file could not be read: the file itself, or a byte in it that is not UTF-8.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Text(Diagnostic),
}

/// Reads a text file (a model, a spec, a population, a dataset) as every reader takes it:
/// [`decode_text`].
pub fn read_text(path: &std::path::Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path)?;
    decode_text(&path.display().to_string(), bytes).map_err(ReadError::Text)
}

/// A file's bytes as text: UTF-8, where a byte that is not is an error at its line and column
/// (a file saved as Latin-1 or Windows-1252: `µg`, `°C`); lines ended by a carriage return
/// alone (old Mac text, a spreadsheet's "CSV (Macintosh)") end as others do, each lone CR
/// becoming a line feed, one byte for one, so that lines and columns count as in the file.
pub fn decode_text(name: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // Lines and columns as the text will be read: lone CRs end lines, and a byte-order
        // mark before the first line takes no column.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let before = lone_crs_to_lf(before);
        let line = before.matches('\n').count() + 1;
        let last = before.rsplit('\n').next().unwrap_or("");
        let last = match line {
            1 => last.strip_prefix('\u{feff}').unwrap_or(last),
            _ => last,
        };
        let col = last.chars().count() + 1;
        Diagnostic {
            file: name.to_string(),
            line,
            col,
            message: format!(
                "byte 0x{:02X} is not UTF-8 text: save the file as UTF-8",
                bytes[at]
            ),
        }
    })?;
    Ok(match lone_crs_to_lf(&text) {
        std::borrow::Cow::Owned(t) => t,
        std::borrow::Cow::Borrowed(_) => text,
    })
}

/// `text` with each carriage return that no line feed follows replaced by a line feed (CRLF
/// lines are left as they stand): borrowed where there is none.
pub fn lone_crs_to_lf(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let lone = |i: usize| b[i] == b'\r' && b.get(i + 1) != Some(&b'\n');
    if !(0..b.len()).any(lone) {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes: Vec<u8> = (0..b.len())
        .map(|i| if lone(i) { b'\n' } else { b[i] })
        .collect();
    // An ASCII byte for an ASCII byte: still UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(bytes).expect("ASCII for ASCII keeps UTF-8"))
}

/// The candidate a misspelt `word` most likely meant, if any is close: one equal to it but for
/// case, or else the nearest within a few edits (insertions, deletions, substitutions and
/// swaps of neighbours: 1 for words of up to 4 characters, 2 up to 8, 3 beyond), the first of
/// equally near ones.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| *c != word).collect();
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    let n = word.chars().count();
    let most = match n {
        0 => return None,
        1..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        // Fewer edits than the longer has characters: `x` is as near to `y` as to anything.
        .filter(|&(d, c)| d <= most && d < c.chars().count().max(n))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `; did you mean 'x'?` where [`closest`] finds `x` among `candidates`, or nothing: the tail
/// of a message that refuses an unknown name.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or(String::new(), |c| format!("; did you mean '{c}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_name_is_suggested() {
        let states = ["depot", "central", "periph"];
        assert_eq!(closest("dept", states), Some("depot"));
        assert_eq!(closest("cnetral", states), Some("central"));
        assert_eq!(closest("Central", states), Some("central"));
        assert_eq!(closest("liver", states), None);
        assert_eq!(
            closest("central", states),
            None,
            "the word itself is no suggestion"
        );
        assert_eq!(closest("sdd", ["mean", "sd", "lo", "hi"]), Some("sd"));
        assert_eq!(closest("x", ["y", "z"]), None);
        assert_eq!(closest("kk", ["k", "v"]), Some("k"));
        assert_eq!(
            closest("tsit6", ["dopri5", "tsit5", "rodas4"]),
            Some("tsit5")
        );
        assert_eq!(closest("evry", ["every", "amount"]), Some("every"));
        // The first of equally near ones.
        assert_eq!(closest("k2", ["k1", "k3"]), Some("k1"));
    }

    #[test]
    fn line_col_counts_from_one() {
        let s = SourceFile::new("m.vpm", "ab\ncdé\nx");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(1), (1, 2));
        assert_eq!(s.line_col(3), (2, 1));
        assert_eq!(s.line_col(7), (2, 4)); // after the two-byte é
        assert_eq!(s.line_col(8), (3, 1));
        assert_eq!(
            s.error(Span::new(3, 4), "boom").to_string(),
            "m.vpm:2:1: boom"
        );
    }

    /// A byte that is not UTF-8 is an error at its line and column (columns count characters,
    /// so a multi-byte character before it counts once); lone CRs end lines, one byte for
    /// one, and CRLF and LF text is returned as it stands.
    #[test]
    fn text_is_utf8_with_its_lines_ended_as_in_the_file() {
        let d =
            decode_text("m.vpm", b"param k = 1\nstate x # \xc2\xb5g\xff\n".to_vec()).unwrap_err();
        assert_eq!((d.line, d.col), (2, 13), "{d}");
        assert_eq!(
            d.to_string(),
            "m.vpm:2:13: byte 0xFF is not UTF-8 text: save the file as UTF-8"
        );
        let d = decode_text("m.vpm", b"\xe9t\xe9".to_vec()).unwrap_err();
        assert_eq!((d.line, d.col), (1, 1));
        // Lines ended by CR alone count as lines; a byte-order mark takes no column.
        let d = decode_text("m.csv", b"ID,TIME\r1,0\r2,1 \xb5g\r".to_vec()).unwrap_err();
        assert_eq!((d.line, d.col), (3, 5), "{d}");
        let d = decode_text("m.csv", b"\xef\xbb\xbfID\xff".to_vec()).unwrap_err();
        assert_eq!((d.line, d.col), (1, 3), "{d}");
        assert_eq!(
            decode_text("m", b"a\rb\r\nc\r".to_vec()).unwrap(),
            "a\nb\r\nc\n"
        );
        for same in ["a\r\nb\r\n", "a\nb\n", ""] {
            assert_eq!(decode_text("m", same.as_bytes().to_vec()).unwrap(), same);
        }
    }
}
