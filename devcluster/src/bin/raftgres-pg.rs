//! `raftgres-pg`: start or stop a local Postgres for tests and dev work.
//!
//! ```text
//! raftgres-pg start --data-dir DIR [--port PORT]   # prints the conninfo line, leaves it running
//! raftgres-pg stop --data-dir DIR
//! ```
//!
//! The Makefile starts one shared server for a whole test run with
//! `export RAFTGRES_TEST_PG="$(raftgres-pg start --data-dir .pg/test)"`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use raftgres_devcluster::postgres::{PgInstance, PgInstanceOptions};

const USAGE: &str = "usage:
  raftgres-pg start --data-dir DIR [--port PORT]
  raftgres-pg stop --data-dir DIR";

struct Arguments {
    command: String,
    data_dir: PathBuf,
    port: Option<u16>,
}

fn parse(mut arguments: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let command = arguments.next().ok_or("missing command")?;
    let mut data_dir = None;
    let mut port = None;
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--port" => {
                let text = value()?;
                port = Some(
                    text.parse()
                        .map_err(|_| format!("--port {text}: not a port"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let data_dir = data_dir.ok_or("--data-dir is required")?;
    Ok(Arguments {
        command,
        data_dir,
        port,
    })
}

fn main() -> ExitCode {
    let arguments = match parse(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("raftgres-pg: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match arguments.command.as_str() {
        "start" => {
            let mut options = PgInstanceOptions::new(&arguments.data_dir);
            options.port = arguments.port;
            PgInstance::start(options).map(|instance| {
                println!("{}", instance.conninfo());
                instance.detach();
            })
        }
        "stop" => PgInstance::stop_data_dir(&arguments.data_dir),
        other => {
            eprintln!("raftgres-pg: unknown command {other}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("raftgres-pg: {error}");
            ExitCode::FAILURE
        }
    }
}
