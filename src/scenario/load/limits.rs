//! Bounds on what the loader reads and parses, checked before any YAML parser runs.
//!
//! Both YAML parsers we use grow badly on hostile input: a 50 MB scenario took 31 s
//! and 7 GB, `/dev/zero` grew without limit, a FIFO blocked forever, and deeply
//! nested flow collections take quadratic time in the scanner (500 KB of nested maps
//! took 32 s). Scenarios are a few KiB, so the limits below are far from anything
//! real and cheap to enforce: a file-type check on the open descriptor, a read of at
//! most `MAX_BYTES + 1` bytes, and one linear pass over the text that counts nesting.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::scenario::span::{self, Pos};

/// Largest scenario file accepted. The shipped scenarios are about 2 KiB.
pub(super) const MAX_BYTES: usize = 1 << 20;

/// Largest text after `{{var}}` substitution: a short placeholder repeated many
/// times with a long value would otherwise multiply the text the parsers see.
pub(super) const MAX_EXPANDED_BYTES: usize = 4 << 20;

/// Deepest nesting of maps and lists accepted. Real scenarios nest about 6 deep.
pub(super) const MAX_DEPTH: usize = 64;

/// Why a path is not read as a scenario.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("found {0}, expected a regular file")]
    NotAFile(&'static str),
    #[error(
        "found a file of {0} bytes, expected at most {max} bytes ({mib} MiB)",
        max = MAX_BYTES,
        mib = MAX_BYTES >> 20
    )]
    TooLarge(u64),
    #[error(
        "found more than {max} bytes (the file grew while it was read), expected at most {max} bytes ({mib} MiB)",
        max = MAX_BYTES,
        mib = MAX_BYTES >> 20
    )]
    Grew,
}

/// What went wrong reading a scenario file.
pub(super) enum ReadError {
    Refused(Refusal),
    Io(std::io::Error),
}

/// Reads a scenario file, refusing anything but a regular file of at most
/// [`MAX_BYTES`].
///
/// The type is checked before opening (opening some devices has effects) and again
/// on the open descriptor, which is what is read: a path swapped in between cannot
/// slip through. `O_NONBLOCK` keeps the open of a FIFO from waiting for a writer,
/// and the read stops after `MAX_BYTES + 1` bytes whatever the size said.
pub(super) fn read(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    check_type(&meta)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    check_type(&meta)?;
    let mut bytes = Vec::with_capacity((meta.len() as usize).min(MAX_BYTES) + 1);
    file.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > MAX_BYTES {
        return Err(ReadError::Refused(Refusal::Grew));
    }
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "found bytes that are not UTF-8 at byte {}, expected UTF-8 text",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

fn check_type(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    let what = if t.is_file() {
        if meta.len() > MAX_BYTES as u64 {
            return Err(ReadError::Refused(Refusal::TooLarge(meta.len())));
        }
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(ReadError::Refused(Refusal::NotAFile(what)))
}

/// Where the text first nests deeper than [`MAX_DEPTH`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooDeep {
    pub pos: Pos,
    pub depth: usize,
    /// The top-level key the deep part is under (empty when there is none).
    pub section: String,
}

/// One linear pass that counts nesting: each deeper block indentation (and each
/// `- ` that starts a compact nested item) is a level, and so is each open `[` or
/// `{`. Quoted strings, comments and block scalars (`|`, `>`) are skipped, and a
/// bracket counts only where a YAML value can start, so `run: echo a[0]` opens
/// nothing. It over-counts a little on odd input (a plain scalar continued on ever
/// deeper lines), never by anything near the limit on a real scenario.
pub(super) fn too_deep(text: &str) -> Option<TooDeep> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    // Indentation of the line that started a block scalar: deeper lines are its text.
    let mut block_scalar: Option<usize> = None;
    let mut section = String::new();

    for (n, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|c| **c == ' ').count();
        let blank =
            chars[indent..].iter().all(|c| c.is_whitespace()) || chars.get(indent) == Some(&'#');
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        // Values can start at the beginning of a line (and after `- `).
        let mut value_start = true;
        if quote.is_none() && flow == 0 {
            if blank {
                continue;
            }
            if indent == 0 {
                section = chars
                    .iter()
                    .take_while(|c| **c != ':' && **c != ' ')
                    .collect();
            }
            while indents.last().is_some_and(|top| *top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            i = indent;
            // `- - x` and `- key: v`: each dash nests the content after it.
            loop {
                if indents.len() > MAX_DEPTH {
                    return Some(TooDeep {
                        pos: Pos {
                            line: n + 1,
                            column: i + 1,
                        },
                        depth: indents.len(),
                        section,
                    });
                }
                if !(chars.get(i) == Some(&'-') && followed_by_space(&chars, i)) {
                    break;
                }
                i += 1;
                while chars.get(i) == Some(&' ') {
                    i += 1;
                }
                if i >= chars.len() {
                    break;
                }
                indents.push(i);
            }
        }
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                let (next, closed) = span::in_string(q, &chars, i);
                if closed {
                    quote = None;
                    value_start = false;
                }
                i = next;
                continue;
            }
            match c {
                '#' if i == 0 || chars[i - 1].is_whitespace() => break,
                '"' | '\'' if value_start => quote = Some(c),
                // A tag or an anchor before a value leaves the value still to come.
                '!' | '&' if value_start => {
                    while i + 1 < chars.len() && !chars[i + 1].is_whitespace() {
                        i += 1;
                    }
                }
                '[' | '{' if value_start => {
                    flow += 1;
                    if indents.len() + flow > MAX_DEPTH {
                        return Some(TooDeep {
                            pos: Pos {
                                line: n + 1,
                                column: i + 1,
                            },
                            depth: indents.len() + flow,
                            section,
                        });
                    }
                }
                ']' | '}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                '|' | '>' if value_start && flow == 0 => {
                    // Its text is every following line indented deeper than the
                    // key it belongs to.
                    block_scalar = Some(indents.last().copied().unwrap_or(0));
                    break;
                }
                c if c.is_whitespace() => {}
                // Indicators only when followed by a space (`:` may touch its value
                // inside brackets, as in JSON); elsewhere they are plain text.
                ':' => value_start = flow > 0 || followed_by_space(&chars, i),
                '-' | '?' => value_start = followed_by_space(&chars, i),
                ',' => value_start = flow > 0,
                _ => value_start = false,
            }
            i += 1;
        }
    }
    None
}

fn followed_by_space(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_none_or(|c| c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize, usize, String)> {
        too_deep(text).map(|d| (d.pos.line, d.pos.column, d.depth, d.section))
    }

    #[test]
    fn real_scenarios_are_far_from_the_limit() {
        for f in [
            "quickstart.yaml",
            "network-partition.yaml",
            "wecom-rate-limit.yaml",
        ] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(f);
            let text = std::fs::read_to_string(p).unwrap();
            assert_eq!(depth_error(&text), None, "{f}");
        }
    }

    #[test]
    fn flow_brackets_count_where_a_value_starts() {
        let deep = format!("a: {}{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(depth_error(&deep), Some((1, 4 + 63, 65, "a".into())));
        let ok = format!("a: {}{}\n", "[".repeat(63), "]".repeat(63));
        assert_eq!(depth_error(&ok), None);
        // Brackets inside plain text, strings and comments open nothing.
        let text = format!(
            "a: echo x{0}\nb: \"{0}\"\nc: '{0}'\nd: 1 # {0}\ne: [\"{0}\", 'it''s {0}']\n",
            "[".repeat(100)
        );
        assert_eq!(depth_error(&text), None);
    }

    #[test]
    fn tags_and_anchors_do_not_hide_a_bracket() {
        let deep = format!("a: {}\n", "!t [".repeat(70));
        assert_eq!(depth_error(&deep).map(|d| d.2), Some(65));
        let deep = format!("a: {}\n", "&x {k: ".repeat(70));
        assert_eq!(depth_error(&deep).map(|d| d.2), Some(65));
    }

    #[test]
    fn block_indentation_and_compact_dashes_count() {
        let deep: String = (0..70).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(depth_error(&deep), Some((65, 65, 65, "k".into())));
        let dashes = format!("a:\n{}x\n", "- ".repeat(70));
        // `a` is level 1, the first dash's line level 2, each further dash one more.
        assert_eq!(depth_error(&dashes).map(|d| (d.0, d.2)), Some((2, 65)));
        // Siblings at one indentation do not add up.
        let wide: String = (0..1000)
            .map(|i| format!("k{i}:\n  - x\n  - y\n"))
            .collect();
        assert_eq!(depth_error(&wide), None);
    }

    #[test]
    fn block_scalars_and_multi_line_strings_are_text() {
        let mut text = "run: |\n".to_string();
        for i in 0..100 {
            text.push_str(&format!("  {}line {{[\n", " ".repeat(i)));
        }
        text.push_str("b: \"open\n");
        for i in 0..100 {
            text.push_str(&format!("{} [{{ \n", " ".repeat(i)));
        }
        text.push_str("  end\"\nc: >-\n   folded [\n");
        assert_eq!(depth_error(&text), None);
        // A key after a block scalar ends it: nesting under that key counts.
        let mut text = "s:\n- run: |\n    echo\n  b:\n".to_string();
        for i in 0..70 {
            text.push_str(&format!("{}k:\n", " ".repeat(3 + i)));
        }
        assert_eq!(depth_error(&text).map(|d| d.2), Some(65));
    }
}
