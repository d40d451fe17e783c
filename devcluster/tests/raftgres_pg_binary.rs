//! Proves that `raftgres-pg start` leaves a usable server running and prints
//! its conninfo, that `raftgres-pg stop` stops it, and that starting again
//! on the same data directory keeps the data (what a dev cluster relies on).

use std::path::Path;
use std::process::Command;

use raftgres_devcluster::testing::TestDatabase;

fn raftgres_pg(arguments: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_raftgres-pg"))
        .args(arguments)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("raftgres-pg runs")
}

async fn query_one_text(conninfo: &str, sql: &str) -> Result<String, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client.simple_query(sql).await?;
    Ok(rows
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn start_prints_conninfo_and_stop_stops_and_data_survives() {
    let directory = std::env::temp_dir().join(format!("raftgres-pg-binary-{}", std::process::id()));
    let data_dir = directory.join("data");
    let started = raftgres_pg(&["start"], &data_dir);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let conninfo = String::from_utf8(started.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        conninfo.starts_with("host=127.0.0.1 port=")
            && conninfo.ends_with("user=postgres dbname=postgres"),
        "{conninfo}"
    );
    let port: u16 = conninfo.split_whitespace().nth(1).unwrap()["port=".len()..]
        .parse()
        .unwrap();
    assert_eq!(query_one_text(&conninfo, "SHOW fsync").await.unwrap(), "on");
    assert_eq!(
        query_one_text(&conninfo, "SHOW synchronous_commit")
            .await
            .unwrap(),
        "on"
    );
    query_one_text(
        &conninfo,
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)",
    )
    .await
    .unwrap();
    // The fixture works against this server too, as with RAFTGRES_TEST_PG.
    let database = TestDatabase::create_on(&conninfo, None).await.unwrap();
    drop(database);

    let stopped = raftgres_pg(&["stop"], &data_dir);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(
        query_one_text(&conninfo, "SELECT 1").await.is_err(),
        "still running"
    );

    let port_text = port.to_string();
    let again = raftgres_pg(&["start", "--port", &port_text], &data_dir);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), conninfo);
    assert_eq!(
        query_one_text(&conninfo, "SELECT id FROM kept")
            .await
            .unwrap(),
        "7"
    );
    let stopped = raftgres_pg(&["stop"], &data_dir);
    assert!(stopped.status.success());
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn bad_arguments_print_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_raftgres-pg"))
        .args(["start"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}
