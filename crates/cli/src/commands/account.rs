//! `coffer account show`: who the CLI acts as, on which server and subscription (the
//! object id is what `role assignment create --assignee-object-id` takes).
use clap::Subcommand;
use serde_json::json;

use super::ClientArgs;

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Show the signed-in principal, tenant and subscription.
    ///
    /// Example: coffer account show --query user.objectId -o tsv
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(cmd: AccountCmd) -> anyhow::Result<()> {
    match cmd {
        AccountCmd::Show { client } => {
            let s = client.session()?;
            let oid = s.object_id().await?;
            let v = json!({
                "id": s.ep.subscription_id,
                "tenantId": s.ep.tenant_id,
                "management": s.ep.management,
                "blob": s.ep.blob,
                "vaultDnsSuffix": s.ep.vault_dns_suffix,
                "user": {"name": s.client_id(), "type": "servicePrincipal", "objectId": oid},
            });
            let view = |v: &serde_json::Value| {
                vec![
                    ("Subscription", v["id"].clone()),
                    ("Tenant", v["tenantId"].clone()),
                    ("User", v["user"]["name"].clone()),
                    ("ObjectId", v["user"]["objectId"].clone()),
                ]
            };
            client.printer().print_view(&v, Some(&view))
        }
    }
}
