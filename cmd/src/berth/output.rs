//! Aligned tables like ctr's, ids only with -q, or JSON for scripts.

use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    /// A Go-template-like line per row, as Docker's `--format '{{.ID}}\t{{.Names}}'`
    /// (with a `table ` prefix, a header first).
    Template(String),
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            t if t.contains("{{") => Ok(Format::Template(t.to_string())),
            other => Err(format!(
                "{other:?}: use table, json, or a template such as '{{{{.ID}}}} {{{{.Names}}}}'"
            )),
        }
    }
}

/// How a listing is printed, from the shared `-q` and `--format` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ListFlags {
    /// Print only the identifiers
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table, json, or a template ('{{.ID}} {{.Names}} {{.Status}}')
    #[arg(long, default_value = "table")]
    pub format: Format,
}

/// A row's field for a template's `{{.Name}}`: the row's JSON key of that name in any case
/// (`.ID` is `id`, `.CreatedAt` is `created_at`), with Docker's names for berth's (`.Names`
/// is `name`; `.Repository` and `.Tag` are the parts of an image's `name`).
fn template_field(row: &serde_json::Value, field: &str) -> String {
    let key: String = field
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0
                && c.is_ascii_uppercase()
                && field
                    .chars()
                    .nth(i - 1)
                    .is_some_and(|p| p.is_ascii_lowercase()))
            .then_some('_');
            sep.into_iter().chain(c.to_lowercase())
        })
        .collect();
    let name = row["name"].as_str().unwrap_or_default();
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, ""),
    };
    let value = match key.as_str() {
        "names" => row["name"].clone(),
        "repository" => serde_json::json!(repo),
        "tag" => serde_json::json!(tag),
        "id" if row["id"].is_null() => row["digest"].clone(),
        _ => row[key.as_str()].clone(),
    };
    match value {
        // Docker's .ID is the short id.
        serde_json::Value::String(s) if key == "id" => crate::names::short_id(&s).to_string(),
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        serde_json::Value::Number(n) if key == "size" => size(n.as_i64().unwrap_or(0)),
        v => v.to_string(),
    }
}

/// `template` filled in from `row`: `{{.Field}}` as [`template_field`], `\t` and `\n` as
/// the characters.
fn render(template: &str, row: &serde_json::Value) -> String {
    fill(template, |field| template_field(row, field))
}

/// `template` with each `{{.Field}}` replaced by `value(Field)` and `\t`, `\n` made the
/// characters; an unclosed `{{` and what follows stay as written.
fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = rest[start + 2..start + len].trim();
        out.push_str(&value(inner.trim_start_matches('.')));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out.replace("\\t", "\t").replace("\\n", "\n")
}

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Vec<serde_json::Value>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: vec![],
            json: vec![],
        }
    }

    /// Adds a row; `json` is what --format json prints for it.
    pub fn row(&mut self, cells: Vec<String>, json: serde_json::Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    pub fn print(&self, flags: ListFlags) -> std::io::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if flags.quiet {
            for r in &self.rows {
                writeln!(out, "{}", r.first().map(String::as_str).unwrap_or(""))?;
            }
            return Ok(());
        }
        if flags.format == Format::Json {
            serde_json::to_writer_pretty(&mut out, &self.json)?;
            return writeln!(out);
        }
        if let Format::Template(t) = &flags.format {
            if let Some(body) = t.strip_prefix("table ") {
                let names = fill(body, str::to_uppercase);
                writeln!(out, "{names}")?;
                for row in &self.json {
                    writeln!(out, "{}", render(body, row))?;
                }
            } else {
                for row in &self.json {
                    writeln!(out, "{}", render(t, row))?;
                }
            }
            return Ok(());
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            let mut s = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                s.push_str(c);
                if i < last {
                    let pad = widths[i].saturating_sub(c.chars().count()) + 3;
                    s.push_str(&" ".repeat(pad));
                }
            }
            s
        };
        writeln!(out, "{}", line(self.header.clone()))?;
        for r in &self.rows {
            writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

pub fn labels(l: &HashMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    let mut v: Vec<_> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    berth_proto::vocab::time::proto_system_time(ts)
}

pub fn age(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = time(ts) else { return "-".into() };
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=86399 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    time(ts)
        .map(berth_proto::vocab::time::rfc3339)
        .unwrap_or_default()
}

/// Parses `key=value` arguments; `key=` or `key` alone means "remove".
pub fn parse_labels(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        if k.is_empty() {
            anyhow::bail!("label {a:?} has no key; use key=value");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The update mask that sets or removes exactly the given labels.
pub fn label_mask(labels: &HashMap<String, String>) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
    }
}

/// Runs `op` on each id in turn, printing the id when it succeeds and the error when it
/// does not (the others still run), and exits 1 if any failed — as `docker rm a b` does.
pub async fn each_id<F, Fut>(ids: &[String], op: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut failed = false;
    for id in ids {
        match op(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// What berthd said, for a person: its message without the trailing kind of a user's error
/// (": not found", ": invalid argument", …) that berthd adds for programs, when the words
/// before it already say what happened. "internal" stays: it marks berth's own faults.
pub fn said(status: &tonic::Status) -> String {
    let m = status.message();
    for kind in [
        "not found",
        "invalid argument",
        "failed precondition",
        "already exists",
    ] {
        if let Some(head) = m.strip_suffix(&format!(": {kind}")) {
            if !head.is_empty() {
                return head.to_string();
            }
        }
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_dockers_fields() {
        let row =
            serde_json::json!({"id": "abc", "name": "web", "status": "Up", "created_at": "t"});
        assert_eq!(
            render("{{.ID}}\\t{{ .Names }}: {{.Status}} {{.CreatedAt}}", &row),
            "abc\tweb: Up t"
        );
        let img = serde_json::json!({"name": "docker.io/library/busybox:1.36", "digest": "sha256:x", "size": 2048});
        assert_eq!(
            render("{{.Repository}} {{.Tag}} {{.ID}} {{.Size}}", &img),
            "docker.io/library/busybox 1.36 sha256:x 2.0 KiB"
        );
        // An unclosed action stays as written, once.
        assert_eq!(render("{{.ID}} {{.Names", &row), "abc {{.Names");
        assert_eq!(
            fill("{{.ID}}\\t{{ .Names }}", str::to_uppercase),
            "ID\tNAMES"
        );
        assert!("{{.ID}}".parse::<Format>().is_ok() && "yaml".parse::<Format>().is_err());
    }

    #[test]
    fn said_drops_the_kind_of_a_users_error_only() {
        let s = |m: &str| said(&tonic::Status::unknown(m));
        assert_eq!(
            s("executable \"x\" not found in the image's PATH (/bin): not found"),
            "executable \"x\" not found in the image's PATH (/bin)"
        );
        assert_eq!(s("shim crashed: internal"), "shim crashed: internal");
        assert_eq!(s("not found"), "not found");
    }

    #[test]
    fn sizes_and_labels() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        let l = parse_labels(&["b=2".into(), "a=1".into(), "gone".into()]).unwrap();
        assert_eq!(l["gone"], "");
        assert!(parse_labels(&["=x".into()]).is_err());
    }
}
