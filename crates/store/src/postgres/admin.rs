//! Creating and dropping whole databases on a PostgreSQL server: for tests and benchmarks,
//! which each want an empty database of their own.

use crate::{StoreError, StoreResult};

/// Creates database `name` through `admin_url` (any database of the same server) and
/// returns the URL of the new one.
pub async fn create_database(admin_url: &str, name: &str) -> StoreResult<String> {
    check_name(name)?;
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let base = admin_url
        .split_once('?')
        .map_or(admin_url, |(b, _)| b)
        .rsplit_once('/')
        .map_or(admin_url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// Drops database `name`, closing its connections first.
pub async fn drop_database(admin_url: &str, name: &str) -> StoreResult<()> {
    check_name(name)?;
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// Whether the server behind `url` makes every commit durable before it answers (`fsync`
/// and `synchronous_commit` both on): benchmarks say which kind of figure they measured.
pub async fn durable(url: &str) -> StoreResult<bool> {
    let client = connect(url).await?;
    let mut on = true;
    for setting in ["fsync", "synchronous_commit"] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
        let value: String = row.get(0);
        on &= value != "off" && value != "local";
    }
    Ok(on)
}

async fn connect(url: &str) -> StoreResult<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Names go into SQL unquoted: only lower-case letters, digits and underscores.
fn check_name(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "database",
            format!("{name:?} is not a plain database name (a-z, 0-9, _)"),
        ))
    }
}
