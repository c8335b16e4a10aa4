//! `coffer group create|list|show|delete`: resource groups (ARM
//! `/subscriptions/{s}/resourcegroups/{name}`).
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::{ClientArgs, confirm, tags};

pub const GROUP_API: &str = "2024-11-01";

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a resource group (or update its tags).
    ///
    /// Example: coffer group create -n rg1 -l eastus
    Create {
        /// Name of the resource group.
        #[arg(short, long)]
        name: String,
        /// Location (a region of the server, e.g. eastus).
        #[arg(short, long)]
        location: String,
        /// Tags: space-separated KEY=VALUE pairs.
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the resource groups of the subscription.
    ///
    /// Example: coffer group list -o table
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a resource group.
    ///
    /// Example: coffer group show -n rg1 --query properties.provisioningState
    Show {
        /// Name of the resource group.
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a resource group and everything in it (asks first unless --yes).
    ///
    /// Example: coffer group delete -n rg1 --yes
    Delete {
        /// Name of the resource group.
        #[arg(short, long)]
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn view(v: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("Name", v["name"].clone()),
        ("Location", v["location"].clone()),
        ("Status", v["properties"]["provisioningState"].clone()),
    ]
}

pub async fn run(cmd: GroupCmd) -> anyhow::Result<()> {
    match cmd {
        GroupCmd::Create {
            name,
            location,
            tags: t,
            client,
        } => {
            let s = client.session()?;
            let mut body = json!({"location": location});
            if let Some(t) = tags(&t)? {
                body["tags"] = t;
            }
            let v = s
                .arm(
                    Method::PUT,
                    &format!(
                        "{}/resourcegroups/{name}?api-version={GROUP_API}",
                        s.subscription_path()
                    ),
                    Some(&body),
                )
                .await?;
            client.printer().print_view(&v, Some(&view))
        }
        GroupCmd::List { client } => {
            let s = client.session()?;
            let v = s
                .arm_list(&format!(
                    "{}/resourcegroups?api-version={GROUP_API}",
                    s.subscription_path()
                ))
                .await?;
            client.printer().print_view(&Value::Array(v), Some(&view))
        }
        GroupCmd::Show { name, client } => {
            let s = client.session()?;
            let v = s
                .arm(
                    Method::GET,
                    &format!(
                        "{}/resourcegroups/{name}?api-version={GROUP_API}",
                        s.subscription_path()
                    ),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&view))
        }
        GroupCmd::Delete { name, yes, client } => {
            confirm(
                yes,
                &format!("This deletes the resource group '{name}' and all its resources"),
            )?;
            let s = client.session()?;
            s.arm(
                Method::DELETE,
                &format!(
                    "{}/resourcegroups/{name}?api-version={GROUP_API}",
                    s.subscription_path()
                ),
                None,
            )
            .await?;
            Ok(())
        }
    }
}
