//! The child processes of the workspace's tests, one subcommand per role. Tests start it
//! through `sessionbus_testkit::child::command()`; it is a program of its own (not a test
//! binary re-run with a filter) so that a test run never counts these roles as tests.
//!
//! - `write-and-abort DB`: writes inside a transaction with a one-page cache, so pages spill
//!   into the file, and aborts before COMMIT: a real hot journal is left next to `DB`.
//! - `wal-host DB JOURNAL_MODE`: holds one connection in that journal mode, as a long-lived
//!   host would, and on `write N` from stdin commits N rows one by one and prints
//!   `count <rows>`; `exit` ends it. Every line it prints starts with `WALHOST `.
//! - `container-start DIR`: opens DIR as the container, does its start-up and writes one chat
//!   row; prints `CHILD-OK` or `CHILD-ERR <error>`.

use diesel::connection::SimpleConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use std::io::{BufRead, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match refs.as_slice() {
        ["write-and-abort", db] => write_and_abort(db),
        ["wal-host", db, journal] => wal_host(db, journal),
        ["container-start", dir] => {
            container_start(dir);
            Ok(())
        }
        _ => Err(format!(
            "usage: sessionbus-test-child write-and-abort DB | wal-host DB MODE | container-start DIR (got {args:?})"
        )),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessionbus-test-child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_and_abort(db: &str) -> Result<(), String> {
    let mut c = SqliteConnection::establish(db).map_err(|e| format!("open {db}: {e}"))?;
    c.batch_execute("PRAGMA cache_size = 1; BEGIN IMMEDIATE;")
        .map_err(|e| format!("begin on {db}: {e}"))?;
    let value = "v".repeat(200);
    for i in 0..2000 {
        c.batch_execute(&format!(
            "INSERT INTO session_state (key, value, updated_at) VALUES ('k{i}', '{value}', 'x')"
        ))
        .map_err(|e| format!("insert into {db}: {e}"))?;
    }
    std::process::abort();
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn wal_host(db: &str, journal: &str) -> Result<(), String> {
    let mut c = SqliteConnection::establish(db).map_err(|e| format!("open {db}: {e}"))?;
    c.batch_execute(&format!(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = {journal}"
    ))
    .map_err(|e| format!("pragmas on {db}: {e}"))?;
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "WALHOST {s}");
        let _ = o.flush();
    };
    out("ready".into());
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        if let Some(n) = line.strip_prefix("write ") {
            let n: i64 = n.parse().map_err(|e| format!("write {n:?}: {e}"))?;
            for i in 0..n {
                c.batch_execute(&format!("INSERT INTO t VALUES ({})", i + 1))
                    .map_err(|e| format!("insert into {db}: {e}"))?;
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            let count = diesel::sql_query("SELECT count(*) AS n FROM t")
                .get_result::<Count>(&mut c)
                .map_err(|e| format!("count in {db}: {e}"))?;
            out(format!("count {}", count.n));
        } else if line == "exit" {
            break;
        }
    }
    Ok(())
}

fn container_start(dir: &str) {
    use sessionbus_store::{ContainerSession, NewOutbound};
    let started = ContainerSession::open(dir).and_then(|c| c.start().map(|_| c));
    match started.and_then(|c| c.outbound().write(&NewOutbound::chat("from-child", "hi"))) {
        Ok(_) => println!("CHILD-OK"),
        Err(e) => println!("CHILD-ERR {e}"),
    }
}
