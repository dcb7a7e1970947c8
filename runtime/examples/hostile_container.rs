//! A compromised container: instead of answering, it attacks the host through everything it
//! can write, from inside its sandbox. The hostile-container tests run it in bubblewrap with
//! exactly the write access a real container has and show the host unharmed.
//!
//! ```text
//! hostile_container --workspace DIR --attack NAME [--target HOST_PATH]... [--hang]
//! ```
//!
//! Each attack works on the container's own area (`/workspace`: outbound.db and its journal,
//! `outbox/`, `.heartbeat`) and tries what lies beyond it; `--target` names host files the
//! attack aims at (a super-journal field, a symlink). It prints one line per step on stdout
//! (`step <what>: ok` or `step <what>: refused: <error>`), then exits 0, or sleeps forever
//! with `--hang` (a hung container the host must kill).

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use sessionbus_testkit::hostile;
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(name = "hostile_container")]
struct Args {
    /// The container's view of its session (`/workspace` in the sandbox)
    #[arg(long, default_value = "/workspace")]
    workspace: PathBuf,
    /// Which attack
    #[arg(long)]
    attack: String,
    /// Host paths the attack aims at
    #[arg(long = "target")]
    targets: Vec<PathBuf>,
    /// Sleep forever afterwards
    #[arg(long)]
    hang: bool,
}

fn main() {
    let args = Args::parse();
    let w = &args.workspace;
    let out = w.join("outbound.db");
    match args.attack.as_str() {
        "super-journal" => {
            // Every host file it knows of, as the super-journal of a hot journal next to its
            // own file (the host's rollback would delete it) and next to where a host journal
            // would be.
            for (i, t) in args.targets.iter().enumerate() {
                let name = if i == 0 {
                    "outbound.db-journal".to_string()
                } else {
                    format!("journal-{i}")
                };
                step(&format!("plant {name} naming {}", t.display()), || {
                    std::fs::write(w.join(&name), hostile::super_journal_naming(t))
                });
            }
            step("plant inbound.db-journal in the workspace", || {
                let target = args.targets.first().cloned().unwrap_or_default();
                std::fs::write(
                    w.join("inbound.db-journal"),
                    hostile::super_journal_naming(&target),
                )
            });
        }
        "replace-files" => {
            step("rename inbound.db away", || {
                std::fs::rename(w.join("inbound.db"), w.join("inbound.old"))
            });
            step("write over inbound.db", || {
                std::fs::write(w.join("inbound.db"), b"forged")
            });
            step("replace outbound.db with a forgery holding a view", || {
                std::fs::rename(&out, w.join("outbound.real"))?;
                sql(
                    &out,
                    "CREATE TABLE processing_ack (message_id TEXT PRIMARY KEY, status TEXT, \
                     status_changed TEXT); \
                     CREATE VIEW messages_out AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL \
                     SELECT x + 1 FROM r) SELECT x AS id, x AS seq, NULL AS in_reply_to, \
                     '' AS timestamp, NULL AS deliver_after, NULL AS recurrence, 'chat' AS kind, \
                     NULL AS platform_id, NULL AS channel_type, NULL AS thread_id, \
                     randomblob(1000000) AS content FROM r;",
                )
            });
        }
        "schema" => {
            step("a trigger that loops on processing_ack", || {
                sql(
                    &out,
                    "CREATE TRIGGER evil AFTER DELETE ON processing_ack BEGIN \
                     INSERT INTO processing_ack SELECT message_id || 'x', status, status_changed \
                     FROM processing_ack; END;",
                )
            });
            step("a view in place of the migrations table", || {
                sql(
                    &out,
                    "DROP TABLE IF EXISTS __diesel_schema_migrations; \
                     CREATE VIEW __diesel_schema_migrations AS WITH RECURSIVE r(x) AS \
                     (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x AS version, \
                     randomblob(100000) AS run_on FROM r;",
                )
            });
            step("drop container_state", || {
                sql(&out, "DROP TABLE IF EXISTS container_state;")
            });
        }
        "fifos" => {
            for name in ["outbound.db-journal", ".heartbeat"] {
                step(&format!("a FIFO at {name}"), || {
                    let _ = std::fs::remove_file(w.join(name));
                    hostile::mkfifo(&w.join(name));
                    Ok(())
                });
            }
            outbox_traps(w, &args.targets);
        }
        "fifo-outbound" => {
            step("a FIFO at outbound.db", || {
                std::fs::remove_file(&out)?;
                hostile::mkfifo(&out);
                Ok(())
            });
        }
        "symlinks" => {
            let target = args.targets.first().cloned().unwrap_or_default();
            step("outbound.db as a link to a host file", || {
                std::fs::rename(&out, w.join("outbound.real"))?;
                std::os::unix::fs::symlink(&target, &out)
            });
            step("outbound.db-journal as a link", || {
                std::os::unix::fs::symlink(&target, w.join("outbound.db-journal"))
            });
            step(".heartbeat as a link", || {
                let _ = std::fs::remove_file(w.join(".heartbeat"));
                std::os::unix::fs::symlink(&target, w.join(".heartbeat"))
            });
        }
        "huge" => {
            step(
                "a 20 MB content row, a 5 MB id, 48 sparse 64 MiB attachments",
                || {
                    sql(
                        &out,
                        "INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES \
                     ('big', 1001, '2026-01-01 00:00:00', 'chat', \
                      '\"' || hex(zeroblob(10000000)) || '\"'); \
                     INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES \
                     (hex(zeroblob(2500000)), 1003, '2026-01-01 00:00:00', 'chat', '{}'); \
                     INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, content) \
                     VALUES ('files', 1005, NULL, '2026-01-01 00:00:00', 'chat', \
                     '{\"text\":\"files\",\"files\":[\"f0\"]}');",
                    )?;
                    let dir = w.join("outbox/files");
                    std::fs::create_dir_all(&dir)?;
                    for i in 0..48 {
                        let f = std::fs::File::create(dir.join(format!("f{i}")))?;
                        f.set_len(64 * 1024 * 1024)?;
                    }
                    Ok(())
                },
            );
        }
        "claims" => {
            step("a million processing claims", || {
                sql(
                    &out,
                    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r \
                     WHERE x < 1000000) INSERT INTO processing_ack \
                     SELECT 'claim-' || x, 'processing', '2020-01-01 00:00:00' FROM r;",
                )
            });
        }
        "far-future" => {
            step("a reply due in 9999, then 1500 replies after it", || {
                sql(
                    &out,
                    "INSERT INTO messages_out (id, seq, timestamp, deliver_after, kind, content) \
                     VALUES ('later', 2001, '2026-01-01 00:00:00', '9999-12-31 23:59:59', \
                     'chat', '{\"text\":\"later\"}'); \
                     WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r \
                     WHERE x < 1500) INSERT INTO messages_out (id, seq, timestamp, kind, content) \
                     SELECT 'now-' || x, 2001 + 2 * x, '2026-01-01 00:00:00', 'chat', \
                     '{\"text\":\"now\"}' FROM r;",
                )
            });
        }
        "escape" => {
            // What lies beyond its area: each of these must be refused by the sandbox.
            for (what, path) in [
                ("inbound.db", w.join("inbound.db")),
                ("the host's stamps", w.join(".inbound-generation/x")),
                ("inbox", w.join("inbox/x")),
                ("container.json", w.join("agent/container.json")),
                (
                    "the skill links",
                    PathBuf::from("/home/node/.claude/skills/x"),
                ),
            ] {
                step(&format!("write {what}"), || std::fs::write(&path, b"pwned"));
            }
            for (what, path) in [
                ("the host's stamps", w.join(".inbound-generation")),
                (
                    "the skill links",
                    PathBuf::from("/home/node/.claude/skills"),
                ),
                ("container.json", w.join("agent/container.json")),
            ] {
                step(&format!("rename {what} away"), || {
                    std::fs::rename(&path, path.with_extension("moved"))
                });
            }
            for t in &args.targets {
                step(&format!("read host file {}", t.display()), || {
                    std::fs::read(t).map(|_| ())
                });
            }
        }
        "unkillable" => {
            step("a Bash timeout of i64::MAX and a heartbeat in 2099", || {
                sql(
                    &out,
                    &format!(
                        "INSERT OR REPLACE INTO container_state (id, current_tool, \
                         tool_declared_timeout_ms, tool_started_at, updated_at) VALUES \
                         (1, 'Bash', {}, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
                        i64::MAX
                    ),
                )?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(w.join(".heartbeat"))?;
                f.set_modified(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_070_908_800),
                )
            });
        }
        other => {
            println!("unknown attack {other}");
            std::process::exit(2);
        }
    }
    println!("done");
    if args.hang {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Traps in the outbox: a message folder that is a link to a host folder, one whose file is a
/// link to a host file, one holding a FIFO.
fn outbox_traps(w: &Path, targets: &[PathBuf]) {
    let target = targets.first().cloned().unwrap_or_default();
    step("outbox/linked -> a host folder", || {
        std::os::unix::fs::symlink(
            target.parent().unwrap_or(Path::new("/")),
            w.join("outbox/linked"),
        )
    });
    step("outbox/filelink/f -> a host file", || {
        std::fs::create_dir_all(w.join("outbox/filelink"))?;
        std::os::unix::fs::symlink(&target, w.join("outbox/filelink/f"))
    });
    step("outbox/fifo/f is a FIFO", || {
        std::fs::create_dir_all(w.join("outbox/fifo"))?;
        hostile::mkfifo(&w.join("outbox/fifo/f"));
        Ok(())
    });
}

fn sql(db: &Path, text: &str) -> std::io::Result<()> {
    let mut c = SqliteConnection::establish(&db.to_string_lossy())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    c.batch_execute(text)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn step(what: &str, f: impl FnOnce() -> std::io::Result<()>) {
    match f() {
        Ok(()) => println!("step {what}: ok"),
        Err(e) => println!("step {what}: refused: {e}"),
    }
}
