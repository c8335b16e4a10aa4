//! `coffer`: the server, its operator commands, and the everyday client commands
//! (`group`, `keyvault`, `role`, `storage`) in the shape `az` users know.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use coffer_server::config::{ServerArgs, ServerConfig};
use serde_json::{Value, json};

mod blob;
mod client;
mod commands;
mod error;
mod output;
mod profile;
mod session;
mod transfer;

use commands::ClientArgs;
use output::{Output, Printer};

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: a self-hosted key vault and encrypted blob store that speaks Azure's protocols",
    long_about = "Coffer: a self-hosted key vault and encrypted blob store that speaks Azure's protocols.\n\n\
Client commands act as a profile saved by `coffer login` (--profile, COFFER_PROFILE, or the \
default profile), or as the local administrator of the server whose data directory is given \
with --data-dir (or COFFER_DATA_DIR). Output: -o json|table|tsv|none (table on a terminal, \
JSON otherwise); --query selects a field path.",
    after_help = error::EXIT_CODES_HELP,
    after_long_help = error::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (identity, management, vault, blob, console, CONNECT proxy).
    Server(Box<ServerArgs>),
    /// Service principals.
    Sp {
        #[command(subcommand)]
        cmd: SpCmd,
    },
    /// Console users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// The server at a glance: readiness (store up, root key unsealed), listeners, regions, and
    /// storage accounts whose customer-managed key is not healthy.
    ///
    /// Example: coffer status --data-dir ./coffer-data -o table
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Subscriptions.
    Subscription {
        #[command(subcommand)]
        cmd: SubscriptionCmd,
    },
    /// Resource groups.
    Group {
        #[command(subcommand)]
        cmd: commands::group::GroupCmd,
    },
    /// Key vaults and their keys.
    Keyvault {
        #[command(subcommand)]
        cmd: commands::keyvault::KeyvaultCmd,
    },
    /// Role assignments and definitions (RBAC).
    Role {
        #[command(subcommand)]
        cmd: commands::role::RoleCmd,
    },
    /// Storage accounts, containers and blobs.
    Storage {
        #[command(subcommand)]
        cmd: commands::storage::StorageCmd,
    },
    /// Sign in as a service principal and save a named profile.
    ///
    /// The profile (endpoint, tenant, client id, where the secret comes from) and its token
    /// cache are kept in $XDG_CONFIG_HOME/coffer (else ~/.config/coffer), mode 0600. The
    /// secret is never a flag value: --secret-env VAR, --secret-file FILE (owner-only),
    /// --secret-stdin, or a prompt. The last profile signed in becomes the default.
    ///
    /// Example: COFFER_SECRET=… coffer login --profile prod --endpoint https://coffer.example:8443 --tenant T -u CLIENT_ID --secret-env COFFER_SECRET --ca-file ca.pem
    Login(commands::login::LoginArgs),
    /// Forget a profile and its cached tokens.
    ///
    /// Example: coffer logout --profile prod
    Logout(commands::login::LogoutArgs),
    /// The principal the CLI acts as.
    Account {
        #[command(subcommand)]
        cmd: commands::account::AccountCmd,
    },
    /// Print a shell completion script.
    ///
    /// Example: coffer completions bash > /etc/bash_completion.d/coffer
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum SubscriptionCmd {
    /// Create a subscription (you become its Owner); prints its id.
    ///
    /// Example: coffer subscription create --name "Team keys"
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Filters shared by `audit list` and `audit export`.
#[derive(clap::Args)]
struct AuditFilterArgs {
    /// Records at or after this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    from: Option<String>,
    /// Records at or before this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    to: Option<String>,
    /// A resource id: records of it and of everything below it (a vault's keys, an account's blobs).
    #[arg(long)]
    resource: Option<String>,
    /// A key name: records of operations on that key (in any vault; combine with --resource).
    #[arg(long)]
    key: Option<String>,
    /// Operation name (KeyUnwrap, PutBlob, Microsoft.Storage/storageAccounts/write, ...).
    #[arg(long)]
    operation: Option<String>,
    /// Caller: object id, application id or sign-in name.
    #[arg(long)]
    caller: Option<String>,
    /// Success, Failure or Started.
    #[arg(long)]
    result: Option<String>,
    /// Correlation id (a blob request and the vault calls it caused share one).
    #[arg(long)]
    correlation_id: Option<String>,
}

impl AuditFilterArgs {
    fn pairs(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        for (k, v) in [
            ("from", &self.from),
            ("to", &self.to),
            ("resourceId", &self.resource),
            ("key", &self.key),
            ("operation", &self.operation),
            ("caller", &self.caller),
            ("result", &self.result),
            ("correlationId", &self.correlation_id),
        ] {
            if let Some(v) = v {
                q.push((k.to_string(), v.clone()));
            }
        }
        q
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// List audit records (oldest first) from the running server, as a JSON array.
    ///
    /// Example: coffer audit list --operation KeyUnwrap --from 2026-11-29T00:00:00Z --top 50
    List {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        top: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Export every matching record as JSON Lines (one record per line) to standard output.
    ///
    /// Example: coffer audit export --resource /subscriptions/S/resourceGroups/rg1 > audit.jsonl
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check the stored audit log: every record against the hash chain, every checkpoint
    /// against its signature. Exit code 0 when intact, 3 when not (the first bad record is
    /// named), 1 on other errors. Reads the data directory directly (the server may run).
    Verify {
        /// The server's data directory.
        #[arg(long, env = "COFFER_DATA_DIR", default_value = "coffer-data")]
        data_dir: PathBuf,
        /// The seal key file [default: DATA_DIR/seal.key].
        #[arg(long, env = "COFFER_SEAL_KEY_FILE")]
        seal_key_file: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "json")]
        output: Output,
    },
}

/// Exit code of `coffer audit verify` for a log that is not intact.
const EXIT_AUDIT_BROKEN: u8 = 3;

#[derive(Subcommand)]
enum SpCmd {
    /// Create a service principal; prints {"client_id","client_secret","object_id"} once.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a console user. The password is read from standard input (one line) with
    /// --password-stdin, otherwise generated and printed once.
    Create {
        /// Sign-in name.
        #[arg(long)]
        name: String,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Print a result as `client` asks (`-o`, `--query`).
fn print(client: &ClientArgs, v: &Value) -> anyhow::Result<()> {
    client.printer().print(v)
}

async fn status(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let ep: Value = serde_json::from_str(
        &std::fs::read_to_string(client.data_dir().join("endpoints.json"))
            .context("is the server running with this --data-dir?")?,
    )?;
    let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
    let ready = c.get_text("/readyz", &[]).await.is_ok();
    let health: Value = serde_json::from_str(&c.get_text("/coffer/admin/health", &[]).await?)?;
    let unhealthy = health["unhealthyCustomerManagedKeys"].clone();
    let out = json!({
        "ready": ready,
        "sealed": false,
        "management": ep["management"],
        "blob": ep["blob"],
        "proxy": ep["proxy"],
        "regions": health["regions"],
        "unhealthyCustomerManagedKeys": unhealthy,
    });
    let printer = client.printer();
    match printer.format {
        Output::Table if client.query.is_none() => {
            println!("ready            {ready}");
            println!("sealed           false (the server answers, so its root key is unsealed)");
            for k in ["management", "blob", "proxy"] {
                println!("{k:<16} {}", ep[k].as_str().unwrap_or_default());
            }
            let regions: Vec<&str> = health["regions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("regions          {}", regions.join(", "));
            let list = unhealthy.as_array().cloned().unwrap_or_default();
            println!("unhealthy CMK    {}", list.len());
            for u in list {
                println!(
                    "  {}  {}  {}",
                    u["status"].as_str().unwrap_or_default(),
                    u["storageAccountId"].as_str().unwrap_or_default(),
                    u["message"].as_str().unwrap_or_default()
                );
            }
        }
        _ => printer.print(&out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(filter: &str) {
    let f = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { client } => status(&client).await,
        Command::Group { cmd } => commands::group::run(cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Keyvault { cmd } => commands::keyvault::run(cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Role { cmd } => commands::role::run(cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Storage { cmd } => commands::storage::run(cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Login(a) => commands::login::login(a).await.map(|()| ExitCode::SUCCESS),
        Command::Logout(a) => commands::login::logout(a).map(|()| ExitCode::SUCCESS),
        Command::Account { cmd } => commands::account::run(cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Subscription {
            cmd: SubscriptionCmd::Create { name, client },
        } => {
            let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
            let alias = format!(
                "coffer-cli-{}",
                client::random_password()?.get(..12).unwrap_or("x")
            );
            let v = c
                .put(
                    &format!(
                        "/providers/Microsoft.Subscription/aliases/{alias}?api-version=2021-10-01"
                    ),
                    &json!({"properties": {"displayName": name, "workload": "Production"}}),
                )
                .await?;
            print(
                &client,
                &json!({"subscriptionId": v["properties"]["subscriptionId"], "displayName": name}),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            cmd:
                AuditCmd::List {
                    filter,
                    top,
                    client,
                },
        } => {
            let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
            let mut q = filter.pairs();
            q.push(("top".into(), top.clamp(1, 10_000).to_string()));
            let v: Value = serde_json::from_str(&c.get_text("/coffer/admin/audit", &q).await?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&v["value"]).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            cmd: AuditCmd::Export { filter, client },
        } => {
            use std::io::Write;
            let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
            let mut after: Option<i64> = None;
            let mut stdout = std::io::stdout().lock();
            loop {
                let mut q = filter.pairs();
                q.push(("top".into(), "10000".into()));
                q.push(("format".into(), "jsonl".into()));
                if let Some(a) = after {
                    q.push(("afterSeq".into(), a.to_string()));
                }
                let text = c.get_text("/coffer/admin/audit", &q).await?;
                let mut n = 0;
                for line in text.lines().filter(|l| !l.is_empty()) {
                    writeln!(stdout, "{line}")?;
                    n += 1;
                    after = serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v["seq"].as_i64())
                        .or(after);
                }
                if n < 10_000 {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            cmd:
                AuditCmd::Verify {
                    data_dir,
                    seal_key_file,
                    output,
                },
        } => {
            use coffer_domain::audit::chain::Verdict;
            let key_file = seal_key_file.unwrap_or_else(|| data_dir.join("seal.key"));
            match coffer_server::bootstrap::verify_audit(&data_dir, &key_file).await? {
                Verdict::Intact {
                    records,
                    checkpoints,
                    head_seq,
                    head,
                } => {
                    Printer::new(Some(output), None).print(
                        &json!({"intact": true, "records": records, "checkpoints": checkpoints, "headSeq": head_seq, "head": head}),
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Broken { seq, reason } => {
                    Printer::new(Some(output), None).print(
                        &json!({"intact": false, "firstBadRecord": seq, "reason": reason}),
                    )?;
                    Ok(ExitCode::from(EXIT_AUDIT_BROKEN))
                }
            }
        }
        Command::Server(args) => {
            let cfg = ServerConfig::resolve(*args)?;
            init_tracing(&cfg.log);
            coffer_server::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sp {
            cmd: SpCmd::Create { name, client },
        } => {
            let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
            let v = c
                .post(
                    "/coffer/admin/servicePrincipals",
                    &json!({"displayName": name}),
                )
                .await?;
            let out = json!({
                "client_id": v["client_id"], "client_secret": v["client_secret"],
                "object_id": v["object_id"], "tenant_id": v["tenant_id"],
            });
            print(&client, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            cmd:
                UserCmd::Create {
                    name,
                    password_stdin,
                    client,
                },
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password")?;
                let pw = line.trim_end_matches(['\r', '\n']).to_string();
                if pw.is_empty() {
                    bail!("empty password on standard input");
                }
                (pw, false)
            } else {
                (client::random_password()?, true)
            };
            let c = client::AdminClient::from_data_dir(&client.data_dir()).await?;
            let v = c
                .post(
                    "/coffer/admin/users",
                    &json!({"username": name, "password": password}),
                )
                .await?;
            let mut out = json!({"username": v["username"], "object_id": v["object_id"], "tenant_id": v["tenant_id"]});
            if generated {
                out["password"] = json!(password);
            }
            print(&client, &out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer: {e:#}");
            if let Some(h) = error::hint_of(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::from(error::exit_code_of(&e))
        }
    }
}
