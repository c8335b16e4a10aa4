//! The everyday client commands, in the shape `az` users know: nouns, verbs and flag names
//! follow `az` where it has the same command. Each module holds its clap definitions and
//! its handlers; every handler signs in through [`ClientArgs`].
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::error::usage;
use crate::output::{Output, Printer};
use crate::profile::Profiles;
use crate::session::Session;

pub mod account;
pub mod group;
pub mod keyvault;
pub mod login;
pub mod role;
pub mod storage;

/// Flags every client command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// Act as the local administrator of the server whose data directory this is (reads
    /// DIR/endpoints.json and DIR/admin-credentials.json) [default: the default profile if
    /// there is one, else ./coffer-data].
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Act as a profile saved by `coffer login` (takes precedence over --data-dir).
    #[arg(long, env = "COFFER_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// Print only this field path of the result, e.g. `properties.vaultUri`, `[].name`,
    /// `key.kid`, `value[0].id` (a JMESPath subset: fields, `[N]`, `[]`).
    #[arg(long, value_name = "PATH")]
    pub query: Option<String>,
}

impl ClientArgs {
    /// Sign in: the profile given, else the data directory given, else the default profile,
    /// else ./coffer-data.
    pub fn session(&self) -> anyhow::Result<Session> {
        if let Some(p) = &self.profile {
            let all = Profiles::load()?;
            return Session::from_profile(p, all.get(p)?);
        }
        if let Some(d) = &self.data_dir {
            return Session::from_data_dir(d);
        }
        let all = Profiles::load().unwrap_or_default();
        if let Some(name) = &all.default
            && let Ok(p) = all.get(name)
        {
            return Session::from_profile(name, p);
        }
        Session::from_data_dir(&self.data_dir())
    }
    /// The data directory (operator commands): given, or ./coffer-data.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("coffer-data"))
    }
    pub fn printer(&self) -> Printer {
        Printer::new(self.output, self.query.clone())
    }
}

/// `--tags a=b c=d` → `{"a":"b","c":"d"}`.
pub fn tags(t: &[String]) -> anyhow::Result<Option<Value>> {
    if t.is_empty() {
        return Ok(None);
    }
    let mut m = Map::new();
    for kv in t {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() {
            return Err(usage(format!("--tags: '{kv}' is not KEY=VALUE")));
        }
        m.insert(k.to_string(), json!(v));
    }
    Ok(Some(Value::Object(m)))
}

/// The resource group of an ARM id (`/subscriptions/S/resourceGroups/G/...`).
pub fn group_of(id: &str) -> Option<String> {
    let segs: Vec<&str> = id.split('/').collect();
    segs.iter()
        .position(|s| s.eq_ignore_ascii_case("resourceGroups"))
        .and_then(|i| segs.get(i + 1))
        .map(|s| s.to_string())
}

/// Ask "are you sure" on a terminal unless `--yes`; refuse without a terminal.
pub fn confirm(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "{what}: no terminal to confirm on; pass --yes"
        )));
    }
    eprint!("{what}. Are you sure? (y/N): ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        anyhow::bail!("cancelled")
    }
}

/// Unix seconds → RFC 3339 (for table views).
pub fn unix_to_rfc3339(v: &Value) -> Value {
    v.as_i64()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// A date flag (`--expires`, `--not-before`): RFC 3339 (`2027-01-31T00:00:00Z`), a date
/// (`2027-01-31`, midnight UTC) or Unix seconds.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let f = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &f) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    Err(usage(format!(
        "'{s}' is not a date: use RFC 3339 (2027-01-31T00:00:00Z), YYYY-MM-DD or Unix seconds"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() -> anyhow::Result<()> {
        assert_eq!(
            tags(&["a=b".into(), "c=".into(), "d".into()])?,
            Some(json!({"a": "b", "c": "", "d": ""}))
        );
        assert!(tags(&["=x".into()]).is_err());
        assert_eq!(tags(&[])?, None);
        assert_eq!(
            group_of("/subscriptions/s/resourceGroups/rg1/providers/x/y/z").as_deref(),
            Some("rg1")
        );
        assert_eq!(parse_time("2027-01-31")?, 1_801_353_600);
        assert_eq!(parse_time("2027-01-31T00:00:00Z")?, 1_801_353_600);
        assert_eq!(parse_time("1801353600")?, 1_801_353_600);
        assert!(parse_time("tomorrow").is_err());
        assert_eq!(
            unix_to_rfc3339(&json!(1_801_353_600)),
            json!("2027-01-31T00:00:00Z")
        );
        Ok(())
    }
}
