//! containerd's filter language, as containerd parses it, once, for every List and Subscribe.
//!
//! ```text
//! filters   := a list of filter strings, any of which may match (an empty one matches all)
//! selectors := selector (',' selector)*  (all must match)
//! selector  := fieldpath [op value]      (no op: the field is present and non-empty)
//! fieldpath := field ('.' field)*
//! field     := "quoted" | [A-Za-z0-9_]+
//! op        := '==' | '!=' | '~='
//! value     := quoted | [^\s,]+          (spaces between tokens are ignored)
//! quoted    := "…" (Go escapes: \n \t \xhh \u1234 …); for '~=' also /…/ and |…|
//! ```
//! dockerd subscribes with `topic~=|^/tasks/|`; ctr filters with `labels."a.b"==c`. An
//! absent field compares as the empty string for '!=' and '~=', as in containerd.

use crate::core::error::{Error, Result};
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
            Op::Matches(re) => re.is_match(value.as_deref().unwrap_or("")),
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
        let mut all = vec![];
        loop {
            all.push(self.selector()?);
            self.skip_space();
            match self.peek() {
                None => break,
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.error("expected ',' between selectors")),
            }
        }
        Ok(vec![all])
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
            (None | Some(','), _) => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                })
            }
            _ => return Err(self.error("expected an operator (==, !=, ~=)")),
        };
        self.pos += 2;
        self.skip_space();
        let value = self.value(op == "~=")?;
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
            Some(c) if c.is_alphanumeric() || c == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            _ => Err(self.error("expected a field name")),
        }
    }

    /// A value; `regex` allows the regular-expression quotes `/…/` and `|…|`.
    fn value(&mut self, regex: bool) -> Result<String> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(q @ ('/' | '|')) if regex => self.quoted(q),
            Some('/' | '|') => Err(self.error("/…/ and |…| quote regular expressions (~=) only")),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ',' && !c.is_whitespace()) {
                    self.pos += 1;
                }
                let v: String = self.chars[start..self.pos].iter().collect();
                if v.is_empty() {
                    return Err(self.error("expected a value"));
                }
                Ok(v)
            }
        }
    }

    /// `n` hex digits of an escape, as a character.
    fn hex_escape(&mut self, n: usize) -> Result<char> {
        let digits: String = self
            .chars
            .get(self.pos..self.pos + n)
            .unwrap_or(&[])
            .iter()
            .collect();
        let code = u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .ok_or_else(|| self.error("bad hexadecimal escape"))?;
        self.pos += n;
        char::from_u32(code).ok_or_else(|| self.error("escape names no character"))
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
                        'r' => out.push('\r'),
                        'a' if quote == '"' => out.push('\u{7}'),
                        'b' if quote == '"' => out.push('\u{8}'),
                        'f' if quote == '"' => out.push('\u{c}'),
                        'v' if quote == '"' => out.push('\u{b}'),
                        'x' if quote == '"' => out.push(self.hex_escape(2)?),
                        'u' if quote == '"' => out.push(self.hex_escape(4)?),
                        'U' if quote == '"' => out.push(self.hex_escape(8)?),
                        c if c == quote || c == '\\' => out.push(c),
                        // Regex escapes pass through untouched.
                        c if quote != '"' => {
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

/// Answers a record that filters on one identifying field (`name` or `id`) and its labels.
pub fn key_label_field(
    key: &str,
    value: &str,
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    match path.first().map(String::as_str) {
        Some(k) if k == key => Some(value.to_string()),
        Some("labels") => label_field(labels, path),
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
            key_label_field("name", self.name, &self.labels, path)
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
        assert!(f(r#"name=="docker.io/library/busybox:latest""#));
    }

    /// The filter strings real clients send, as containerd reads them.
    #[test]
    fn what_real_clients_send() {
        struct Env(&'static str, &'static str);
        impl Fields for Env {
            fn field(&self, path: &[String]) -> Option<String> {
                match path.first().map(String::as_str) {
                    Some("topic") => Some(self.0.into()),
                    Some("namespace") => Some(self.1.into()),
                    _ => None,
                }
            }
        }
        let exit = Env("/tasks/exit", "moby");
        let image = Env("/images/create", "default");
        let m = |f: &[&str], e: &Env| Filter::parse_all(f).unwrap().matches(e);
        // dockerd 20.10: its namespace's events, or any task event.
        let dockerd = ["namespace==moby", "topic~=|^/tasks/|"];
        assert!(m(&dockerd, &exit));
        assert!(!m(&dockerd, &image));
        assert!(m(&dockerd, &Env("/containers/create", "moby")));
        // ctr events, ctr content ls, crictl-style labels, nerdctl names.
        assert!(m(&[r#"topic~="/tasks/.*""#], &exit));
        assert!(m(&[r"topic~=/^\/tasks\//"], &exit));
        assert!(m(&["topic~=^/images/,namespace==default"], &image));
        assert!(m(
            &[r#"  topic == "/tasks/exit" , namespace==moby "#],
            &exit
        ));
        // As in containerd, a leading '/' quotes: a path is given in "…" to '=='.
        assert!(Filter::parse("topic==/tasks/exit").is_err());
        let a = item(
            "docker.io/library/busybox:latest",
            &[
                ("containerd.io/uncompressed", "sha256:1"),
                ("io.kubernetes.pod.uid", "u-1"),
                ("nerdctl/name", "web"),
            ],
        );
        let f = |s: &str| Filter::parse(s).unwrap().matches(&a);
        assert!(f(r#"labels."containerd.io/uncompressed""#));
        assert!(f(r#"labels."io.kubernetes.pod.uid"==u-1"#));
        assert!(f(r#"labels."nerdctl/name"=="web""#));
        assert!(f(r#"name=="docker.io\x2flibrary\u002fbusybox:latest""#));
        // An absent field is the empty string to != and ~=.
        assert!(f("labels.missing!=x"));
        assert!(f("labels.missing~=^$"));
        // `|` quotes a regex; it is not an OR.
        assert!(!f("name~=|^quay|"));
        assert!(Filter::parse("name==a|name==b")
            .unwrap()
            .matches(&item("a|name==b", &[])));
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
            "name==/x/",
            "name~=|unterminated",
            r#"name=="\xZZ""#,
            "a==b c==d",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
