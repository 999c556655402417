//! Where each node of a YAML document sits: dotted field path -> line and column.
//!
//! serde gives us the *path* of a bad field (through `serde_path_to_error`) but the
//! values we deserialize from no longer know their position, and our own validation
//! runs after deserialization. So the loader parses the text once more with a
//! marked event parser and keeps, for every path, where its key and value start.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Index from dotted paths (`faults[0].with.to[1]`) to source positions.
#[derive(Debug, Default)]
pub struct SpanIndex {
    entries: HashMap<String, Entry>,
}

impl SpanIndex {
    /// Builds the index; a document that does not parse gives an empty index (the
    /// YAML syntax error is reported by serde_yaml with its own position).
    pub fn build(text: &str) -> Self {
        let mut b = Builder {
            stack: Vec::new(),
            index: SpanIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
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
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
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
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key. Non-scalar keys are not used by scenarios.
                    *key = Some((scalar_key.unwrap_or("?").to_string(), pos));
                    None
                }
                Some((k, kpos)) => {
                    let p = if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    };
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

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(v, ..) => {
                self.node(Some(&v), mark);
            }
            Event::Alias(_) => {
                self.node(None, mark);
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.node(None, mark).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
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
