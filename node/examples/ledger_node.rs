//! A raftgres node running a custom state machine: a ledger of account
//! balances in a Postgres table of its own, replicated with Raft.
//!
//! ```sh
//! cargo run -p raftgres --example ledger_node -- serve --config node-1.toml
//! ```
//!
//! The configuration is a node's usual TOML (see `raftgres serve --help`).
//! Clients send commands through the generic `raftgres.v1.Client.Submit`
//! RPC; each is text, and the answer is the account's balance after it:
//!
//! - `deposit ACCOUNT AMOUNT`
//! - `withdraw ACCOUNT AMOUNT` (refused, changing nothing, when the balance
//!   would go below zero: the answer then starts with `insufficient`)
//! - `balance ACCOUNT` (a read that goes through the log, so linearizable)
//!
//! What a state machine provides: its tables (`migrate`), a check of
//! commands before they are proposed (`validate`), a deterministic `apply`
//! inside the node's apply transaction, and a snapshot of its whole state
//! with its check and restore. It serves no KV API: `raftgres.v1.Kv` is
//! the built-in KV state machine's, not every node's.

use std::path::PathBuf;

use raftgres::server::{serve_with, NodeConfig, Prepared, StateMachine};
use tokio_postgres::{Client, Transaction};

/// Balances by account, in table `ledger_accounts`.
struct Ledger;

/// One parsed command.
enum Command<'a> {
    Deposit(&'a str, i64),
    Withdraw(&'a str, i64),
    Balance(&'a str),
}

fn parse(command: &[u8]) -> Result<Command<'_>, String> {
    let text = std::str::from_utf8(command).map_err(|_| "commands are UTF-8 text".to_string())?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let amount = |word: &str| {
        word.parse::<i64>()
            .ok()
            .filter(|amount| *amount > 0)
            .ok_or_else(|| format!("{word:?} is not a positive amount"))
    };
    match words.as_slice() {
        ["deposit", account, value] => Ok(Command::Deposit(account, amount(value)?)),
        ["withdraw", account, value] => Ok(Command::Withdraw(account, amount(value)?)),
        ["balance", account] => Ok(Command::Balance(account)),
        _ => Err(format!(
            "unknown command {text:?}; try `deposit A 10`, `withdraw A 5` or `balance A`"
        )),
    }
}

/// A snapshot's lines, `ACCOUNT BALANCE` each.
fn parse_snapshot(data: &[u8]) -> Result<Vec<(&str, i64)>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "the snapshot is not text".to_string())?;
    text.lines()
        .map(|line| match line.split_once(' ') {
            Some((account, balance)) if !account.is_empty() => balance
                .parse::<i64>()
                .ok()
                .filter(|balance| *balance >= 0)
                .map(|balance| (account, balance))
                .ok_or_else(|| format!("bad snapshot line {line:?}")),
            _ => Err(format!("bad snapshot line {line:?}")),
        })
        .collect()
}

async fn balance(
    transaction: &Transaction<'_>,
    account: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = transaction
        .query_opt(
            "SELECT balance FROM ledger_accounts WHERE account = $1",
            &[&account],
        )
        .await?;
    Ok(row.map_or(0, |row| row.get(0)))
}

async fn set_balance(
    transaction: &Transaction<'_>,
    account: &str,
    balance: i64,
) -> Result<(), tokio_postgres::Error> {
    transaction
        .execute(
            "INSERT INTO ledger_accounts (account, balance) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET balance = EXCLUDED.balance",
            &[&account, &balance],
        )
        .await?;
    Ok(())
}

impl StateMachine for Ledger {
    async fn migrate(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS ledger_accounts (
                     account text PRIMARY KEY,
                     balance bigint NOT NULL CHECK (balance >= 0)
                 )",
            )
            .await
    }

    fn validate(&self, command: &[u8]) -> Result<(), String> {
        parse(command).map(|_| ())
    }

    async fn apply(
        &self,
        transaction: &Prepared<'_, Transaction<'_>>,
        _index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        // Validated before it was proposed; a command this version cannot
        // read answers the same on every replica and changes nothing.
        let Ok(command) = parse(command) else {
            return Ok(b"invalid".to_vec());
        };
        let answer = match command {
            Command::Deposit(account, amount) => {
                let after = balance(transaction, account).await?.saturating_add(amount);
                set_balance(transaction, account, after).await?;
                after.to_string()
            }
            Command::Withdraw(account, amount) => {
                let before = balance(transaction, account).await?;
                if before < amount {
                    format!("insufficient {before}")
                } else {
                    set_balance(transaction, account, before - amount).await?;
                    (before - amount).to_string()
                }
            }
            Command::Balance(account) => balance(transaction, account).await?.to_string(),
        };
        Ok(answer.into_bytes())
    }

    async fn snapshot(
        &self,
        transaction: &Transaction<'_>,
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        let rows = transaction
            .query(
                "SELECT account, balance FROM ledger_accounts ORDER BY account",
                &[],
            )
            .await?;
        let mut text = String::new();
        for row in rows {
            let account: String = row.get(0);
            let balance: i64 = row.get(1);
            text.push_str(&format!("{account} {balance}\n"));
        }
        Ok(text.into_bytes())
    }

    fn validate_snapshot(&self, data: &[u8]) -> Result<(), String> {
        parse_snapshot(data).map(|_| ())
    }

    async fn restore(
        &self,
        transaction: &Transaction<'_>,
        data: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        let accounts = parse_snapshot(data)
            .expect("the node runs validate_snapshot before it restores a snapshot");
        transaction
            .execute("DELETE FROM ledger_accounts", &[])
            .await?;
        for (account, balance) in accounts {
            set_balance(transaction, account, balance).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let arguments: Vec<String> = std::env::args().collect();
    let config = match arguments.as_slice() {
        [_, serve, flag, path] if serve == "serve" && flag == "--config" => {
            NodeConfig::from_file(&PathBuf::from(path))?
        }
        _ => return Err("usage: ledger_node serve --config FILE".into()),
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    serve_with(config, Ledger, shutdown).await?;
    Ok(())
}
