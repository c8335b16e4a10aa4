//! Output of the client commands: `-o json|table|tsv|none` (table on a terminal, JSON
//! otherwise) and `--query`, a JMESPath subset that selects a field path.
//!
//! Query grammar: `segment ('.' segment)*` where a segment is a field name followed by any
//! number of `[N]` (index, negative from the end) or `[]` / `[*]` (apply the rest of the path
//! to every element). A query may start with an index or a projection: `[0].id`, `[].name`,
//! `properties.encryption.keyvaultproperties.keyname`, `value[].kid`.
use std::io::{IsTerminal, Write};

use anyhow::bail;
use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Pretty-printed JSON (the default when standard output is not a terminal).
    Json,
    /// Aligned columns of the main fields (the default on a terminal).
    Table,
    /// Tab-separated values without a header, for scripts (strings unquoted).
    Tsv,
    /// Print nothing.
    None,
}

impl Output {
    /// The chosen format, or table on a terminal and JSON otherwise.
    pub fn resolve(o: Option<Output>) -> Output {
        o.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Output::Table
            } else {
                Output::Json
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(i64),
    Project,
}

fn parse_query(q: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let b = q.trim();
    let chars: Vec<char> = b.chars().collect();
    let mut i = 0;
    let mut expect_field = true;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if expect_field {
                    bail!("--query '{q}': a field name is missing before '.'");
                }
                expect_field = true;
                i += 1;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .map(|p| p + i)
                    .ok_or_else(|| anyhow::anyhow!("--query '{q}': unclosed '['"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner.is_empty() || inner == "*" {
                    steps.push(Step::Project);
                } else {
                    let n: i64 = inner.parse().map_err(|_| {
                        anyhow::anyhow!("--query '{q}': '[{inner}]' is not an index")
                    })?;
                    steps.push(Step::Index(n));
                }
                expect_field = false;
                i = close + 1;
            }
            _ => {
                if !expect_field {
                    bail!("--query '{q}': expected '.' or '[' at position {i}");
                }
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let name = name.trim();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$')
                {
                    bail!("--query '{q}': '{name}' is not a field name");
                }
                steps.push(Step::Field(name.to_string()));
                expect_field = false;
            }
        }
    }
    if expect_field && !steps.is_empty() {
        bail!("--query '{q}' ends with '.'");
    }
    Ok(steps)
}

fn eval(v: &Value, steps: &[Step]) -> Value {
    let Some((first, rest)) = steps.split_first() else {
        return v.clone();
    };
    match first {
        Step::Field(name) => match v.get(name) {
            Some(x) => eval(x, rest),
            None => Value::Null,
        },
        Step::Index(n) => match v.as_array() {
            Some(a) => {
                let len = a.len() as i64;
                let idx = if *n < 0 { len + n } else { *n };
                usize::try_from(idx)
                    .ok()
                    .and_then(|i| a.get(i))
                    .map(|x| eval(x, rest))
                    .unwrap_or(Value::Null)
            }
            None => Value::Null,
        },
        Step::Project => match v.as_array() {
            Some(a) => Value::Array(
                a.iter()
                    .map(|x| eval(x, rest))
                    .filter(|x| !x.is_null())
                    .collect(),
            ),
            None => Value::Null,
        },
    }
}

/// Apply a `--query` to a value.
pub fn query(v: &Value, q: &str) -> anyhow::Result<Value> {
    Ok(eval(v, &parse_query(q)?))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// The (column, text) pairs shown for one row: the scalar fields, or when an object has none,
/// the scalar fields one level down (`key.kid`).
fn row_cells(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Object(m) => {
            let top: Vec<(String, String)> = m
                .iter()
                .filter(|(_, x)| !x.is_null())
                .filter_map(|(k, x)| scalar_text(x).map(|t| (k.clone(), t)))
                .collect();
            if !top.is_empty() {
                return top;
            }
            let mut out = Vec::new();
            for (k, x) in m {
                if let Value::Object(inner) = x {
                    for (k2, y) in inner {
                        if let Some(t) = scalar_text(y).filter(|_| !y.is_null()) {
                            out.push((format!("{k}.{k2}"), t));
                        }
                    }
                }
            }
            out
        }
        Value::Array(a) => vec![(
            "Result".into(),
            a.iter()
                .map(|x| scalar_text(x).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        )],
        other => vec![(
            "Result".into(),
            scalar_text(other).unwrap_or_else(|| other.to_string()),
        )],
    }
}

fn rows_of(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

/// One row of a table: (column, text) pairs in display order.
pub type Row = Vec<(String, String)>;

/// A command's table view of one item: its main fields, in order.
pub type View = dyn Fn(&Value) -> Vec<(&'static str, Value)>;

fn view_rows(v: &Value, view: Option<&View>) -> Vec<Row> {
    rows_of(v)
        .into_iter()
        .map(|item| match view {
            Some(f) => f(item)
                .into_iter()
                .map(|(k, x)| {
                    (
                        k.to_string(),
                        scalar_text(&x).unwrap_or_else(|| x.to_string()),
                    )
                })
                .collect(),
            None => row_cells(item),
        })
        .collect()
}

/// Render rows as a table (header, dashes, aligned columns).
pub fn table(rows: &[Row]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in r {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    if cols.is_empty() {
        return String::new();
    }
    let cell = |r: &Row, c: &str| {
        r.iter()
            .find(|(k, _)| k == c)
            .map(|(_, t)| t.replace(['\n', '\t'], " "))
            .unwrap_or_default()
    };
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(cols.clone()));
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(cols.iter().map(|c| cell(r, c)).collect()));
        out.push('\n');
    }
    out
}

/// Render rows as tab-separated values: one line per row, no header.
pub fn tsv(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .map(|(_, t)| t.replace(['\n', '\t'], " "))
            .collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out
}

/// How a command's result is printed: format and query. A command may give a table view
/// (its main fields, in order) used by `table` and `tsv` when no `--query` is given.
pub struct Printer {
    pub format: Output,
    pub query: Option<String>,
}

impl Printer {
    pub fn new(format: Option<Output>, query: Option<String>) -> Self {
        Self {
            format: Output::resolve(format),
            query,
        }
    }

    pub fn print(&self, v: &Value) -> anyhow::Result<()> {
        self.print_view(v, None)
    }

    pub fn print_view(&self, v: &Value, view: Option<&View>) -> anyhow::Result<()> {
        let selected;
        let (v, view) = match &self.query {
            Some(q) => {
                selected = query(v, q)?;
                (&selected, None)
            }
            None => (v, view),
        };
        let text = match self.format {
            Output::Json => format!("{}\n", serde_json::to_string_pretty(v)?),
            Output::Table => table(&view_rows(v, view)),
            Output::Tsv => tsv(&view_rows(v, view)),
            Output::None => String::new(),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries() -> anyhow::Result<()> {
        let v = json!({"properties": {"vaultUri": "https://kv/", "list": [{"a": 1}, {"a": 2}, {"b": 3}]},
                       "value": [{"kid": "k1"}, {"kid": "k2"}]});
        assert_eq!(query(&v, "properties.vaultUri")?, json!("https://kv/"));
        assert_eq!(query(&v, "properties.list[].a")?, json!([1, 2]));
        assert_eq!(query(&v, "properties.list[-1].b")?, json!(3));
        assert_eq!(query(&v, "value[*].kid")?, json!(["k1", "k2"]));
        assert_eq!(query(&v, "missing.x")?, Value::Null);
        assert_eq!(
            query(&json!([{"n": "a"}, {"n": "b"}]), "[].n")?,
            json!(["a", "b"])
        );
        assert_eq!(query(&json!([{"n": "a"}]), "[0].n")?, json!("a"));
        assert!(query(&v, "a..b").is_err());
        assert!(query(&v, "a.").is_err());
        assert!(query(&v, "a[x]").is_err());
        assert!(query(&v, "a[0").is_err());
        Ok(())
    }

    #[test]
    fn tables_and_tsv() {
        let v = json!([{"name": "rg1", "location": "eastus", "properties": {"x": 1}},
                       {"name": "rg-two", "location": "westeurope"}]);
        let view = |x: &Value| {
            vec![
                ("Name", x["name"].clone()),
                ("Location", x["location"].clone()),
            ]
        };
        let rows = view_rows(&v, Some(&view));
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Name    Location");
        assert_eq!(lines[1], "------  ----------");
        assert_eq!(lines[2], "rg1     eastus");
        assert_eq!(tsv(&rows), "rg1\teastus\nrg-two\twesteurope\n");
        assert_eq!(
            tsv(&view_rows(&json!("https://kv/"), None)),
            "https://kv/\n"
        );
        // Generic rows: scalar fields, or one level down when there is none.
        let generic = view_rows(&v, None);
        assert_eq!(generic[0].len(), 2);
        let k = json!({"key": {"kid": "k"}, "attributes": {"enabled": true}});
        assert!(table(&view_rows(&k, None)).starts_with("attributes.enabled  key.kid"));
    }
}
