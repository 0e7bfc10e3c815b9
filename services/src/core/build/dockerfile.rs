//! Dockerfile parsing: comments, line continuations, instructions with their line numbers,
//! JSON and shell forms, and `$VAR` / `${VAR}` / `${VAR:-default}` substitution.

use crate::core::error::{Error, Result};
use std::collections::BTreeMap;

pub const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "LABEL",
    "EXPOSE",
    "VOLUME",
    "CMD",
    "ENTRYPOINT",
    "STOPSIGNAL",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// Line the instruction starts on (1-based).
    pub line: usize,
    /// Upper case.
    pub cmd: String,
    /// Everything after the instruction word, continuations joined.
    pub rest: String,
}

impl Instruction {
    /// How the step is shown: `RUN echo hi`.
    pub fn text(&self) -> String {
        format!("{} {}", self.cmd, self.rest)
    }

    /// The JSON form (`["a", "b"]`) when the arguments are one.
    pub fn json(&self) -> Option<Vec<String>> {
        let t = self.rest.trim();
        if !t.starts_with('[') {
            return None;
        }
        serde_json::from_str(t).ok()
    }

    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::invalid(format!(
            "Dockerfile line {}: {}: {msg}",
            self.line, self.cmd
        ))
    }
}

pub fn parse(text: &str) -> Result<Vec<Instruction>> {
    let mut out = vec![];
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
        if let Some(cut) = line.strip_suffix('\\') {
            acc.push_str(cut);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        let acc = acc.trim().to_string();
        if acc.is_empty() {
            continue;
        }
        let (word, rest) = match acc.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (acc.as_str(), ""),
        };
        let cmd = word.to_ascii_uppercase();
        if !INSTRUCTIONS.contains(&cmd.as_str()) {
            return Err(Error::invalid(format!(
                "Dockerfile line {start}: unknown instruction {word:?}"
            )));
        }
        if rest.is_empty() {
            return Err(Error::invalid(format!(
                "Dockerfile line {start}: {cmd} needs arguments"
            )));
        }
        out.push(Instruction {
            line: start,
            cmd,
            rest: rest.to_string(),
        });
    }
    if let Some((start, _)) = pending {
        return Err(Error::invalid(format!(
            "Dockerfile line {start}: the last line continues past the end of the file"
        )));
    }
    match out.iter().find(|i| i.cmd != "ARG") {
        Some(first) if first.cmd == "FROM" => Ok(out),
        Some(first) => Err(Error::invalid(format!(
            "Dockerfile line {}: the first instruction must be FROM, not {}",
            first.line, first.cmd
        ))),
        None => Err(Error::invalid("the Dockerfile has no FROM")),
    }
}

/// The most one expansion may produce: a variable that doubles itself line after line
/// (`ENV A=$A$A`) would otherwise ask for gigabytes from a few kilobytes of Dockerfile.
pub const MAX_EXPANSION: usize = 1 << 20;

/// Replaces `$NAME`, `${NAME}` and `${NAME:-default}` with their values (unknown: empty).
/// `\$` stays a literal `$`. Linear in the input and the output; an output past
/// [`MAX_EXPANSION`] is an error.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let chars: Vec<char> = s.chars().collect();
    // The next `}` at or after each position, found once (not once per `${`).
    let mut next_close = vec![usize::MAX; chars.len() + 1];
    for i in (0..chars.len()).rev() {
        next_close[i] = if chars[i] == '}' {
            i
        } else {
            next_close[i + 1]
        };
    }
    let mut out = String::new();
    let push = |out: &mut String, piece: &str| -> Result<()> {
        if out.len() + piece.len() > MAX_EXPANSION {
            return Err(Error::invalid(format!(
                "variable substitution would produce more than {MAX_EXPANSION} bytes"
            )));
        }
        out.push_str(piece);
        Ok(())
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            push(&mut out, "$")?;
            i += 2;
            continue;
        }
        if c != '$' {
            push(&mut out, c.encode_utf8(&mut [0u8; 4]))?;
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let end = next_close[i + 2];
            if end != usize::MAX {
                let inner: String = chars[i + 2..end].iter().collect();
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner.as_str(), None),
                };
                match (vars.get(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => push(&mut out, v)?,
                    (None, Some(d)) => push(&mut out, d)?,
                    (None, None) => {}
                }
                i = end + 1;
                continue;
            }
        }
        let mut j = i + 1;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j == i + 1 {
            push(&mut out, "$")?;
            i += 1;
            continue;
        }
        let name: String = chars[i + 1..j].iter().collect();
        if let Some(v) = vars.get(&name) {
            push(&mut out, v)?;
        }
        i = j;
    }
    Ok(out)
}

/// Splits `K=V K2="v 2"` (or the legacy `K V`) into pairs, honouring quotes.
pub fn pairs(s: &str) -> Result<Vec<(String, String)>> {
    let words = words(s)?;
    if words.len() >= 2 && !words[0].contains('=') {
        // Legacy form: the first word is the key, the rest the value.
        let (k, v) = s.trim().split_once(char::is_whitespace).unwrap_or((s, ""));
        return Ok(vec![(k.to_string(), unquote(v.trim()))]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::invalid(format!("{w:?} is not KEY=VALUE"))),
        })
        .collect()
}

fn unquote(s: &str) -> String {
    words(s)
        .map(|w| w.join(" "))
        .unwrap_or_else(|_| s.to_string())
}

/// Whitespace-separated words with '..' and ".." quoting and backslash escapes.
pub fn words(s: &str) -> Result<Vec<String>> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = it.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Error::invalid(format!("unterminated quote in {s:?}")));
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_comments_and_forms() {
        let df = "# syntax comment\nARG BASE=busybox\nFROM $BASE\n\nRUN echo a \\\n  # inside\n  && echo b\nCMD [\"sh\", \"-c\", \"echo hi\"]\nenv A=1 B=\"two words\"\n";
        let ins = parse(df).unwrap();
        assert_eq!(ins.len(), 5);
        assert_eq!(ins[2].cmd, "RUN");
        assert_eq!(ins[2].line, 5);
        assert_eq!(ins[2].rest, "echo a  && echo b");
        assert_eq!(ins[3].json().unwrap(), vec!["sh", "-c", "echo hi"]);
        assert_eq!(
            pairs(&ins[4].rest).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        let err = parse("FROM x\nFROB y\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("FROB"), "{err}");
        assert!(parse("RUN x\n").unwrap_err().to_string().contains("FROM"));
        assert!(parse("FROM x\nRUN a \\").is_err());
    }

    #[test]
    fn substitution() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(
            expand("$A/${A}/${B:-d}/${A:-d}/\\$A/$", &vars).unwrap(),
            "x/x/d/x/$A/$"
        );
        assert_eq!(
            pairs("KEY some value").unwrap(),
            vec![("KEY".into(), "some value".into())]
        );
        assert_eq!(
            words("a 'b c' \"d\\\"e\"").unwrap(),
            vec!["a", "b c", "d\"e"]
        );
    }

    #[test]
    fn expansion_is_bounded_and_linear() {
        // Doubling: 21 lines of `ENV A=$A$A` would be 2 MiB from one byte.
        let mut vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        let mut refused = false;
        for _ in 0..25 {
            match expand("$A$A", &vars) {
                Ok(v) => {
                    vars.insert("A".into(), v);
                }
                Err(e) => {
                    assert!(e.to_string().contains("more than"), "{e}");
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        assert!(vars["A"].len() <= MAX_EXPANSION);
        // 200 KB of unclosed `${`: once quadratic, now one pass.
        let hostile = "${".repeat(100_000);
        let started = std::time::Instant::now();
        assert_eq!(
            expand(&hostile, &BTreeMap::new()).unwrap().len(),
            hostile.len()
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
