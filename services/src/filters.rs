//! containerd's filter language, parsed once and used by every List.
//!
//! ```text
//! filters   := conj ('|' conj)*          (a list of filter strings is also an OR)
//! conj      := selector (',' selector)*
//! selector  := fieldpath [op value]      (no op: the field is present and non-empty)
//! fieldpath := field ('.' field)*
//! field     := quoted | [A-Za-z_][A-Za-z0-9_]*
//! op        := '==' | '!=' | '~='
//! value     := quoted | [^,|]+
//! ```
//! Quoted strings use `"…"` with backslash escapes, or `/…/` for a regex value.

use crate::error::{Error, Result};
use regex::Regex;

/// Something a filter can be matched against: answers the value of a field path.
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, item: &dyn Fields) -> bool {
        let value = item.field(&self.path);
        match &self.op {
            Op::Present => value.is_some_and(|v| !v.is_empty()),
            Op::Equal(want) => value.as_deref() == Some(want.as_str()),
            Op::NotEqual(want) => value.as_deref() != Some(want.as_str()),
            Op::Matches(re) => value.is_some_and(|v| re.is_match(&v)),
        }
    }
}

/// A parsed filter: an OR of ANDs of selectors. The empty filter matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any_of: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses a list of filter strings; the list is OR'ed and empty strings match all.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut any_of = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                return Ok(Filter::default());
            }
            any_of.extend(Parser::new(f).parse()?);
        }
        Ok(Filter { any_of })
    }

    pub fn parse(filter: &str) -> Result<Self> {
        Self::parse_all(&[filter])
    }

    pub fn matches(&self, item: &dyn Fields) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|all| all.iter().all(|s| s.matches(item)))
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn error(&self, what: &str) -> Error {
        Error::invalid(format!(
            "filter {:?}: {what} at position {}",
            self.input, self.pos
        ))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn parse(mut self) -> Result<Vec<Vec<Selector>>> {
        let mut any_of = vec![];
        let mut all = vec![];
        loop {
            all.push(self.selector()?);
            self.skip_space();
            match self.peek() {
                None => break,
                Some(',') => self.pos += 1,
                Some('|') => {
                    self.pos += 1;
                    any_of.push(std::mem::take(&mut all));
                }
                Some(_) => return Err(self.error("expected ',' or '|'")),
            }
        }
        any_of.push(all);
        Ok(any_of)
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        self.skip_space();
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), Some('=')) => "==",
            (Some('!'), Some('=')) => "!=",
            (Some('~'), Some('=')) => "~=",
            (None | Some(',') | Some('|'), _) => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                })
            }
            _ => return Err(self.error("expected an operator (==, !=, ~=)")),
        };
        self.pos += 2;
        self.skip_space();
        let value = self.value()?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(
                Regex::new(&value)
                    .map_err(|e| self.error(&format!("bad regular expression {value:?}: {e}")))?,
            ),
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String> {
        self.skip_space();
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            _ => Err(self.error("expected a field name")),
        }
    }

    fn value(&mut self) -> Result<String> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some('/') => self.quoted('/'),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ',' && c != '|') {
                    self.pos += 1;
                }
                let v: String = self.chars[start..self.pos].iter().collect();
                let v = v.trim_end().to_string();
                if v.is_empty() {
                    return Err(self.error("expected a value"));
                }
                Ok(v)
            }
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or_else(|| self.error("dangling escape"))?;
                    self.pos += 1;
                    match c {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        c if c == quote || c == '\\' => out.push(c),
                        // Regex escapes pass through untouched.
                        c if quote == '/' => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// Answers `labels.<key>` from a label map; the common case for every record type.
pub fn label_field(
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    match path {
        [first, key] if first == "labels" => labels.get(key).cloned(),
        [first, rest @ ..] if first == "labels" && !rest.is_empty() => {
            labels.get(&rest.join(".")).cloned()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Item {
        name: &'static str,
        labels: BTreeMap<String, String>,
    }

    impl Fields for Item {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.to_string()),
                Some("labels") => label_field(&self.labels, path),
                _ => None,
            }
        }
    }

    fn item(name: &'static str, labels: &[(&str, &str)]) -> Item {
        Item {
            name,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn equality_and_labels() {
        let a = item(
            "docker.io/library/busybox:latest",
            &[("a.b", "1"), ("x", "y")],
        );
        let f = |s: &str| Filter::parse(s).unwrap().matches(&a);
        assert!(f("name==docker.io/library/busybox:latest"));
        assert!(!f("name==other"));
        assert!(f("name!=other"));
        assert!(f(r#"labels."a.b"==1"#));
        assert!(f("labels.x==y"));
        assert!(f("labels.x"));
        assert!(!f("labels.missing"));
        assert!(f("name~=^docker\\.io/,labels.x==y"));
        assert!(!f("name~=^quay,labels.x==y"));
        assert!(f("name~=/^quay/|labels.x==y"));
        assert!(f(r#"name=="docker.io/library/busybox:latest""#));
    }

    #[test]
    fn list_is_or_and_empty_matches_all() {
        let a = item("a", &[]);
        assert!(Filter::parse_all(&["name==b", "name==a"])
            .unwrap()
            .matches(&a));
        assert!(Filter::parse_all(&[""]).unwrap().matches(&a));
        assert!(Filter::parse_all::<&str>(&[]).unwrap().matches(&a));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "==x",
            "name=x",
            "name==",
            r#"labels."open"#,
            "name~=(",
            "a,",
            "1abc==x",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
