//! `coffer`: the server and its operator commands.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use coffer_server::config::{ServerArgs, ServerConfig};
use serde_json::{Value, json};

mod client;

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: a self-hosted key vault and encrypted blob store that speaks Azure's protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Table,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Act as the local administrator of the server whose data directory this is (reads
    /// DIR/endpoints.json and DIR/admin-credentials.json).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "coffer-data")]
    data_dir: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "json")]
    output: Output,
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
}

#[derive(Subcommand)]
enum AuditCmd {
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

fn print(out: Output, v: &Value) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Table => {
            if let Some(m) = v.as_object() {
                for (k, val) in m {
                    println!(
                        "{k:<16} {}",
                        val.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| val.to_string())
                    );
                }
            }
        }
    }
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
                    print(
                        output,
                        &json!({"intact": true, "records": records, "checkpoints": checkpoints, "headSeq": head_seq, "head": head}),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Broken { seq, reason } => {
                    print(
                        output,
                        &json!({"intact": false, "firstBadRecord": seq, "reason": reason}),
                    );
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
            let c = client::AdminClient::from_data_dir(&client.data_dir).await?;
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
            print(client.output, &out);
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
            let c = client::AdminClient::from_data_dir(&client.data_dir).await?;
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
            print(client.output, &out);
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
            ExitCode::FAILURE
        }
    }
}
