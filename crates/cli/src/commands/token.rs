//! `liftoff token create|list|delete`.

use crate::connect::{Global, Output};
use crate::output::{self, age};
use clap::Subcommand;
use liftoff_types::api::CreateTokenRequest;
use liftoff_types::{now_ms, Scope};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once, on stdout alone.
    #[command(
        after_help = "Examples:\n  liftoff token create --scope agent --name gpu-box-1\n  liftoff token create --scope user --name alice"
    )]
    Create {
        /// admin, user, agent or read.
        #[arg(long)]
        scope: Scope,
        #[arg(long)]
        name: String,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Examples:\n  liftoff token list")]
    List,
    /// Revoke a token by id.
    #[command(after_help = "Examples:\n  liftoff token delete 4")]
    Delete { id: i64 },
}

pub async fn run(g: &Global, cmd: TokenCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        TokenCommand::Create { scope, name } => {
            let created = client
                .create_token(&CreateTokenRequest { name, scope })
                .await?;
            match g.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&created)?),
                Output::Table => println!("{}", created.token),
            }
            Ok(())
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            let now = now_ms();
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.scope.to_string(),
                        age(t.created_at_ms, now),
                        t.name.clone(),
                    ]
                })
                .collect();
            output::print(g.output, &tokens, &["ID", "SCOPE", "AGE", "NAME"], rows)
        }
        TokenCommand::Delete { id } => {
            client.delete_token(id).await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}

/// `liftoff dashboard`: a link that opens the dashboard signed in, on stdout alone (so
/// `xdg-open "$(liftoff dashboard)"` works); how long it lasts on stderr.
pub async fn dashboard(g: &Global) -> anyhow::Result<()> {
    let client = g.client()?;
    let path = client.login_link().await?;
    println!("{}{path}", client.url().trim_end_matches('/'));
    if path != "/" {
        eprintln!("open it within 2 minutes; the session it opens lasts 12 hours");
    }
    Ok(())
}
