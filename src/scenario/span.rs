//! Where each node of a YAML document sits: dotted field path -> line and column.
//!
//! serde gives us the *path* of a bad field (through `serde_path_to_error`) but the
//! values we deserialize from no longer know their position, and our own validation
//! runs after deserialization. So the loader parses the text once more with a
//! marked event parser and keeps, for every path, where its key and value start.
//!
//! The event parser's own marks need two corrections to point where a reader looks:
//! a block mapping "starts" at its first key (yaml-rust2 marks the `:` after it), and
//! an indentless block sequence starts at its first `-` (yaml-rust2 marks the item).
//! The index also remembers duplicate keys and quoted strings that do not close on
//! their own line, which turn a YAML syntax error into a precise diagnostic.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// Longest map key indexed, in characters: YAML's own limit for implicit keys
/// (`key: value`), which only explicit ones (`? key`) can pass. Every path under a
/// key repeats it, so a long key over many entries multiplied memory (a 200 KB key
/// over 40 000 entries took 9.7 GB); the index stops at such a key instead.
pub const MAX_KEY_CHARS: usize = 1024;

/// Index from dotted paths (`faults[0].with.to[1]`) to source positions.
#[derive(Debug, Default)]
pub struct SpanIndex {
    entries: HashMap<String, Entry>,
    duplicates: Vec<DuplicateKey>,
    unclosed_quotes: Vec<Pos>,
    long_key: Option<LongKey>,
}

/// A key longer than [`MAX_KEY_CHARS`]; nothing after it is indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongKey {
    pub pos: Pos,
    /// Its length in characters.
    pub chars: usize,
    /// Dotted path of the map it is in.
    pub parent: String,
}

/// A key written twice in the same mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Dotted path of the key.
    pub path: String,
    /// Where it is first written.
    pub first: Pos,
    /// Where it is written again.
    pub again: Pos,
}

impl SpanIndex {
    /// Builds the index; a document that does not parse gives an empty index (the
    /// YAML syntax error is reported by serde_yaml with its own position).
    pub fn build(text: &str) -> Self {
        let mut b = Builder {
            lines: text.lines().map(|l| l.chars().collect()).collect(),
            stack: Vec::new(),
            index: SpanIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        b.index.unclosed_quotes = unclosed_quotes(text);
        b.index
    }

    /// Position of the node at `path`: its key when it is a map entry (that is where
    /// an editor should jump for "unknown field"), else the value. Falls back to the
    /// nearest ancestor that exists.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(e) = self.entries.get(&p) {
                return Some(e.key.unwrap_or(e.value));
            }
            if p.is_empty() {
                return None;
            }
            p = parent(&p);
        }
    }

    /// Position of the value (not the key) at `path`, or of the nearest ancestor.
    pub fn locate_value(&self, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(e) = self.entries.get(&p) {
                return Some(e.value);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(&p);
        }
    }
}

impl SpanIndex {
    /// The first key longer than [`MAX_KEY_CHARS`], where indexing stopped.
    pub fn long_key(&self) -> Option<&LongKey> {
        self.long_key.as_ref()
    }

    /// Keys written twice in one mapping, in document order.
    pub fn duplicate_keys(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// Quoted strings whose closing quote is not on the line they start on (the
    /// usual cause of a YAML syntax error reported many lines further down).
    pub fn unclosed_quotes(&self) -> &[Pos] {
        &self.unclosed_quotes
    }

    /// The deepest path whose key or value starts at or before `pos` and nearest to
    /// it: "where the parser was" when it stopped.
    pub fn path_before(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .map(|(p, e)| (e.key.unwrap_or(e.value).min(e.value), p))
            .filter(|(start, _)| *start <= pos)
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.len().cmp(&b.1.len())))
            .map(|(_, p)| p.as_str())
    }

    /// The path of the collection whose value starts exactly at `pos`, if any.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.value == pos)
            .max_by_key(|(p, _)| p.len())
            .map(|(p, _)| p.as_str())
    }
}

fn parent(p: &str) -> String {
    match p.rfind(['.', '[']) {
        Some(i) => p[..i].to_string(),
        None => String::new(),
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
        /// Keys seen so far (to spot duplicates; the first one also fixes the start).
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
    /// The source, by line and character (yaml-rust2 columns count characters).
    lines: Vec<Vec<char>>,
    stack: Vec<Frame>,
    index: SpanIndex,
}

impl Builder {
    /// Called for each node start. Returns the node's path when it is a value, or
    /// None when it was consumed as a map key.
    fn node(&mut self, scalar_key: Option<&str>, mark: Marker) -> Option<String> {
        let pos = Pos::from(mark);
        match self.stack.last_mut() {
            None => {
                self.index.entries.insert(
                    String::new(),
                    Entry {
                        key: None,
                        value: pos,
                    },
                );
                Some(String::new())
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.index.entries.insert(
                    p.clone(),
                    Entry {
                        key: None,
                        value: pos,
                    },
                );
                Some(p)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                None => {
                    // This node is a key. Non-scalar keys are not used by scenarios.
                    let name = scalar_key.unwrap_or("?").to_string();
                    let chars = name.chars().count();
                    if chars > MAX_KEY_CHARS {
                        self.index.long_key = Some(LongKey {
                            pos,
                            chars,
                            parent: path.clone(),
                        });
                        return None;
                    }
                    if seen.is_empty() {
                        // A block mapping's mark is the `:` after its first key; a
                        // reader expects the mapping to start at that key.
                        if let Some(e) = self.index.entries.get_mut(path.as_str()) {
                            e.value = e.value.min(pos);
                        }
                    }
                    if let Some(first) = seen.get(&name) {
                        self.index.duplicates.push(DuplicateKey {
                            path: join_key(path, &name),
                            first: *first,
                            again: pos,
                        });
                    } else {
                        seen.insert(name.clone(), pos);
                    }
                    *key = Some((name, pos));
                    None
                }
                Some((k, kpos)) => {
                    let p = join_key(path, &k);
                    if self.index.entries.contains_key(&p) {
                        // A duplicate key: keep the first occurrence's position.
                        return Some(p);
                    }
                    self.index.entries.insert(
                        p.clone(),
                        Entry {
                            key: Some(kpos),
                            value: pos,
                        },
                    );
                    Some(p)
                }
            },
        }
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Builder {
    fn line(&self, pos: Pos) -> &[char] {
        self.lines
            .get(pos.line.wrapping_sub(1))
            .map_or(&[], Vec::as_slice)
    }

    /// yaml-rust2 marks an indentless block sequence (`key:` then `- item` at the same
    /// indentation) at its first item; move back to that item's `-`.
    fn sequence_start(&self, pos: Pos) -> Pos {
        let line = self.line(pos);
        let col = pos.column - 1;
        if line.get(col).is_some_and(|c| *c == '-' || *c == '[') {
            return pos;
        }
        let before: &[char] = line.get(..col).unwrap_or(&[]);
        let trimmed = before.iter().rposition(|c| !c.is_whitespace());
        match trimmed {
            Some(i) if before[i] == '-' => Pos {
                line: pos.line,
                column: i + 1,
            },
            _ => pos,
        }
    }
}

/// One step of a line scanner inside a string opened with quote `q`, at `chars[i]`:
/// where the scan goes on and whether the string closes here. An escape (`\"`) or a
/// doubled single quote (`''`) is stepped over whole, so it closes nothing.
pub(super) fn in_string(q: char, chars: &[char], i: usize) -> (usize, bool) {
    match (q, chars[i]) {
        ('"', '\\') => (i + 2, false),
        ('\'', '\'') if chars.get(i + 1) == Some(&'\'') => (i + 2, false),
        (q, c) => (i + 1, c == q),
    }
}

/// Quoted strings that do not close on the line they open on.
///
/// This is a line scanner, not a YAML parser: when a quote is left open the parser
/// fails many lines later without emitting the string, so the event stream cannot
/// tell. A quote opens a string only where a YAML value can start (after `:`, `-`,
/// `[`, `{`, `,` or at the start of a line); quotes inside plain text such as
/// `run: echo "hi"` do not count.
fn unclosed_quotes(text: &str) -> Vec<Pos> {
    let mut out = Vec::new();
    // Inside a string carried over from an earlier line: its quote character.
    let mut open: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut prev = None; // previous non-space character outside strings
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = open {
                let (next, closed) = in_string(q, &chars, i);
                if closed {
                    open = None;
                    prev = Some(q);
                }
                i = next;
                continue;
            }
            match c {
                '#' if i == 0 || chars[i - 1].is_whitespace() => break,
                '"' | '\'' if prev.is_none_or(|p| ":-[{,?".contains(p)) => {
                    open = Some(c);
                    let start = Pos {
                        line: n + 1,
                        column: i + 1,
                    };
                    // Does it close on this line?
                    let mut j = i + 1;
                    let mut closed = false;
                    while j < chars.len() {
                        let (next, end) = in_string(c, &chars, j);
                        if end {
                            closed = true;
                            break;
                        }
                        j = next;
                    }
                    if closed {
                        open = None;
                        prev = Some(c);
                        i = j + 1;
                        continue;
                    }
                    out.push(start);
                    break;
                }
                c if c.is_whitespace() => {}
                c => prev = Some(c),
            }
            i += 1;
        }
    }
    out
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.index.long_key.is_some() {
            return;
        }
        match ev {
            Event::Scalar(v, ..) => {
                self.node(Some(&v), mark);
            }
            Event::Alias(_) => {
                self.node(None, mark);
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, mark).unwrap_or_default();
                if let Some(e) = self.index.entries.get(&path).copied() {
                    let start = self.sequence_start(e.value);
                    if let Some(e) = self.index.entries.get_mut(&path) {
                        e.value = start;
                    }
                }
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.node(None, mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_paths() {
        let text = "a: 1\nfaults:\n  - name: x\n    with:\n      to: [p, q]\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.locate("a"), Some(Pos { line: 1, column: 1 }));
        assert_eq!(
            idx.locate("faults[0].name"),
            Some(Pos { line: 3, column: 5 })
        );
        assert_eq!(
            idx.locate("faults[0].with.to"),
            Some(Pos { line: 5, column: 7 })
        );
        assert_eq!(
            idx.locate_value("faults[0].with.to[1]"),
            Some(Pos {
                line: 5,
                column: 15
            })
        );
        // A missing child falls back to its parent.
        assert_eq!(
            idx.locate("faults[0].with.nope"),
            Some(Pos { line: 4, column: 5 })
        );
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Option<Pos> {
        Some(Pos { line, column })
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let text = "a: 1\nfaults:\n  - name: x\n    with:\n      to: p\n";
        let idx = SpanIndex::build(text);
        // yaml-rust2 marks these at the `:` after the first key.
        assert_eq!(idx.locate_value(""), pos(1, 1));
        assert_eq!(idx.locate("faults[0]"), pos(3, 5));
        assert_eq!(idx.locate_value("faults[0].with"), pos(5, 7));
    }

    #[test]
    fn flow_mappings_start_at_their_brace() {
        let text = "probe: { http: { url: x, timout: 1s } }\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.locate_value("probe"), pos(1, 8));
        assert_eq!(idx.locate_value("probe.http"), pos(1, 16));
        assert_eq!(idx.locate("probe.http.timout"), pos(1, 26));
        assert_eq!(idx.locate_value("probe.http.timout"), pos(1, 34));
    }

    #[test]
    fn indentless_sequences_start_at_their_dash() {
        let text = "seq:\n- 1\n- { a: b }\nother:\n  -   x\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.locate_value("seq"), pos(2, 1));
        assert_eq!(idx.locate_value("seq[0]"), pos(2, 3));
        assert_eq!(idx.locate_value("seq[1]"), pos(3, 3));
        assert_eq!(idx.locate("seq[1].a"), pos(3, 5));
        assert_eq!(idx.locate_value("other"), pos(5, 3));
        assert_eq!(idx.locate_value("other[0]"), pos(5, 7));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "name: \"日本語\"\nx: { é: 1, bad: 2 }\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.locate("x.bad"), pos(2, 12));
    }

    #[test]
    fn duplicate_keys_are_remembered_at_both_places() {
        let text = "a: 1\nb:\n  c: 2\n  d: { e: 1, e: 2 }\n  c: 3\n";
        let idx = SpanIndex::build(text);
        let d = idx.duplicate_keys();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].path, "b.d.e");
        assert_eq!(
            (d[0].first, d[0].again),
            (pos(4, 8).unwrap(), pos(4, 14).unwrap())
        );
        assert_eq!(d[1].path, "b.c");
        assert_eq!(
            (d[1].first, d[1].again),
            (pos(3, 3).unwrap(), pos(5, 3).unwrap())
        );
        // The first occurrence keeps the path's position.
        assert_eq!(idx.locate("b.c"), pos(3, 3));
    }

    #[test]
    fn quoted_strings_running_past_their_line_are_remembered() {
        let text = "a: \"open\nb: 'it''s' \nc: \"esc \\\" ok\"\nd: \"x\"\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.unclosed_quotes(), &[Pos { line: 1, column: 4 }]);
        // Quotes inside plain text, comments and escaped quotes open nothing.
        let text = "run: echo \"hi\n# don't\nx: 'it''s'\ny: - \"a\\\"b\" # \"\nz: ['a', \"b\"]\n";
        assert_eq!(SpanIndex::build(text).unclosed_quotes(), &[]);
        let text = "a:\n  - 'ok'\n  - 'open\n  - x\n";
        assert_eq!(
            SpanIndex::build(text).unclosed_quotes(),
            &[Pos { line: 3, column: 5 }]
        );
    }

    #[test]
    fn indexing_stops_at_a_key_longer_than_yaml_allows_implicitly() {
        let long = "k".repeat(MAX_KEY_CHARS + 1);
        let text = format!("a:\n  b: 1\n  ? {long}\n  : {{ c: 1 }}\nd: 2\n");
        let idx = SpanIndex::build(&text);
        assert_eq!(
            idx.long_key(),
            Some(&LongKey {
                pos: Pos { line: 3, column: 5 },
                chars: MAX_KEY_CHARS + 1,
                parent: "a".into()
            })
        );
        assert_eq!(idx.locate("a.b"), pos(2, 3));
        // Nothing after it is indexed: `d` falls back to the document.
        assert_eq!(idx.locate("d"), idx.locate(""));
        let ok = SpanIndex::build(&format!("? {}\n: 1\n", &long[1..]));
        assert_eq!(ok.long_key(), None);
    }

    #[test]
    fn finds_the_path_where_parsing_stopped() {
        let text = "a:\n  b: 1\n  c:\n    d: 2\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.path_before(Pos { line: 4, column: 9 }), Some("a.c.d"));
        assert_eq!(idx.path_before(Pos { line: 2, column: 4 }), Some("a.b"));
        assert_eq!(idx.path_at(Pos { line: 4, column: 5 }), Some("a.c"));
    }
}
