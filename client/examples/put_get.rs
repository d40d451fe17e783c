//! Writes a key and reads it back linearizably through a raftgres cluster.
//!
//! ```sh
//! make run            # in another terminal: a local 3-node cluster
//! cargo run -p raftgres-client --example put_get -- 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```
//!
//! The client finds the leader from any of the addresses, follows leader
//! hints, and retries a write whose outcome is unknown with the same
//! session, so the write is applied once however often it is resent.

use raftgres_client::{Client, ReadMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".to_string());
    let client = Client::new(endpoints.split(','))?;
    let written = client.put("greeting", "hello").await?;
    println!("put greeting=hello at log index {}", written.index);
    let value = client.get("greeting", ReadMode::Linearizable).await?;
    println!(
        "get greeting -> {:?}",
        value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    );
    Ok(())
}
