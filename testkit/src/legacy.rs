//! Files as the older implementation left them: every generation G0 to G8 of docs/format.md
//! §4, with no migrations table, created either in one go or patched up generation by
//! generation with `ALTER TABLE ... ADD COLUMN` (both happen in the wild).

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use sessionbus_schema::FileKind;
use std::path::Path;

/// How a legacy file reached its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Created at generation 0 and patched with `ALTER TABLE ADD COLUMN` as upstream upgraded.
    Patched,
    /// Created directly at its generation, every column in `CREATE TABLE`.
    Created,
}

/// The shape of `session_state` in a legacy outbound.db.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStateShape {
    /// `(key, value, updated_at TEXT NOT NULL)`: the documented one.
    Current,
    /// `(key, value)`: an early revision without `updated_at`.
    NoUpdatedAt,
    /// `(key, value)` patched by the seed's open path: `updated_at TEXT NOT NULL DEFAULT ''`.
    SeedPatched,
}

/// Every generation number of docs/format.md §4.
pub const GENERATIONS: [u8; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

/// DDL for a legacy inbound.db of generation `g`.
pub fn inbound_ddl(g: u8, style: Style) -> String {
    let mut sql = String::new();
    let created = style == Style::Created;
    let series = if created && g >= 4 {
        "series_id TEXT,\n"
    } else {
        ""
    };
    let trigger = if created && g >= 6 {
        ",\n trigger INTEGER NOT NULL DEFAULT 1"
    } else {
        ""
    };
    let source = if created && g >= 7 {
        ",\n source_session_id TEXT"
    } else {
        ""
    };
    let on_wake = if created && g >= 8 {
        ",\n on_wake INTEGER NOT NULL DEFAULT 0"
    } else {
        ""
    };
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS messages_in (
 id TEXT PRIMARY KEY,
 seq INTEGER UNIQUE,
 kind TEXT NOT NULL,
 timestamp TEXT NOT NULL,
 status TEXT DEFAULT 'pending',
 process_after TEXT,
 recurrence TEXT,
 {series} tries INTEGER DEFAULT 0,
 platform_id TEXT,
 channel_type TEXT,
 thread_id TEXT,
 content TEXT NOT NULL{trigger}{source}{on_wake}
);\n"
    ));
    if created && g >= 1 {
        sql.push_str(
            "CREATE TABLE IF NOT EXISTS delivered (message_out_id TEXT PRIMARY KEY, platform_message_id TEXT,
 status TEXT NOT NULL DEFAULT 'delivered', delivered_at TEXT NOT NULL);\n",
        );
    } else {
        sql.push_str(
            "CREATE TABLE IF NOT EXISTS delivered (message_out_id TEXT PRIMARY KEY, delivered_at TEXT NOT NULL);\n",
        );
        if g >= 1 {
            sql.push_str("ALTER TABLE delivered ADD COLUMN platform_message_id TEXT;\n");
            sql.push_str(
                "ALTER TABLE delivered ADD COLUMN status TEXT NOT NULL DEFAULT 'delivered';\n",
            );
        }
    }
    if g >= 1 {
        sql.push_str(
            "CREATE TABLE IF NOT EXISTS destinations (name TEXT PRIMARY KEY, display_name TEXT,
 type TEXT NOT NULL, channel_type TEXT, platform_id TEXT, agent_group_id TEXT);\n",
        );
    }
    if g >= 3 {
        sql.push_str(
            "CREATE TABLE IF NOT EXISTS session_routing (id INTEGER PRIMARY KEY CHECK (id = 1),
 channel_type TEXT, platform_id TEXT, thread_id TEXT);\n",
        );
    }
    if !created {
        if g >= 4 {
            sql.push_str("ALTER TABLE messages_in ADD COLUMN series_id TEXT;\n");
            sql.push_str("UPDATE messages_in SET series_id = id WHERE series_id IS NULL;\n");
        }
        if g >= 6 {
            sql.push_str(
                "ALTER TABLE messages_in ADD COLUMN trigger INTEGER NOT NULL DEFAULT 1;\n",
            );
        }
        if g >= 7 {
            sql.push_str("ALTER TABLE messages_in ADD COLUMN source_session_id TEXT;\n");
        }
        if g >= 8 {
            sql.push_str(
                "ALTER TABLE messages_in ADD COLUMN on_wake INTEGER NOT NULL DEFAULT 0;\n",
            );
        }
    }
    if g >= 4 {
        sql.push_str(
            "CREATE INDEX IF NOT EXISTS idx_messages_in_series ON messages_in(series_id);\n",
        );
    }
    sql
}

/// DDL for a legacy outbound.db of generation `g` (outbound changes at G2 and G5 only).
pub fn outbound_ddl(g: u8, state: SessionStateShape) -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS messages_out (id TEXT PRIMARY KEY, seq INTEGER UNIQUE, in_reply_to TEXT,
 timestamp TEXT NOT NULL, deliver_after TEXT, recurrence TEXT, kind TEXT NOT NULL,
 platform_id TEXT, channel_type TEXT, thread_id TEXT, content TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processing_ack (message_id TEXT PRIMARY KEY, status TEXT NOT NULL,
 status_changed TEXT NOT NULL);\n",
    );
    if g >= 2 {
        match state {
            SessionStateShape::Current => sql.push_str(
                "CREATE TABLE IF NOT EXISTS session_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);\n",
            ),
            SessionStateShape::NoUpdatedAt => sql.push_str(
                "CREATE TABLE IF NOT EXISTS session_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n",
            ),
            SessionStateShape::SeedPatched => sql.push_str(
                "CREATE TABLE IF NOT EXISTS session_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE session_state ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';\n",
            ),
        }
    }
    if g >= 5 {
        sql.push_str(
            "CREATE TABLE IF NOT EXISTS container_state (id INTEGER PRIMARY KEY CHECK (id = 1),
 current_tool TEXT, tool_declared_timeout_ms INTEGER, tool_started_at TEXT, updated_at TEXT NOT NULL);\n",
        );
    }
    sql
}

/// Rows a legacy file of generation `g` could hold, `n` messages of each kind of table, using
/// only the columns that generation has. Seqs follow upstream's parity.
pub fn sample_rows_sql(kind: FileKind, g: u8, n: usize) -> String {
    let mut sql = String::new();
    match kind {
        FileKind::Inbound => {
            for i in 0..n {
                let seq = 2 * (i + 1);
                let status = ["pending", "completed", "failed"][i % 3];
                // Columns of later generations get the values upstream would have written, not
                // their defaults, so that a migration that overwrote them would be noticed:
                // odd rows are occurrences of the series started by `in-0`, every third row is
                // context (trigger 0), some rows came from another session or wait for wake.
                let mut cols = String::new();
                let mut vals = String::new();
                if g >= 4 {
                    cols.push_str(", series_id");
                    if i % 2 == 1 {
                        vals.push_str(", 'in-0'");
                    } else {
                        vals.push_str(&format!(", 'in-{i}'"));
                    }
                }
                if g >= 6 {
                    cols.push_str(", trigger");
                    vals.push_str(if i % 3 == 2 { ", 0" } else { ", 1" });
                }
                if g >= 7 {
                    cols.push_str(", source_session_id");
                    vals.push_str(if i % 4 == 3 {
                        ", 'sess-other'"
                    } else {
                        ", NULL"
                    });
                }
                if g >= 8 {
                    cols.push_str(", on_wake");
                    vals.push_str(if i % 5 == 4 { ", 1" } else { ", 0" });
                }
                sql.push_str(&format!(
                    "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, tries, platform_id, channel_type, thread_id, content{cols}) \
                     VALUES ('in-{i}', {seq}, 'chat', '2026-04-21T12:05:{:02}.123Z', '{status}', {}, {}, 'chat-1', 'slack', 't-1', '{{\"text\":\"hello {i}\"}}'{vals});\n",
                    i % 60,
                    if i % 4 == 0 { "'2026-04-21 12:00:00'".to_string() } else { "NULL".into() },
                    i % 3,
                ));
                if g >= 1 {
                    // Every third delivery failed and has no platform message id.
                    let (pmid, dstatus) = if i % 3 == 1 {
                        ("NULL".to_string(), "failed")
                    } else {
                        (format!("'pm-{i}'"), "delivered")
                    };
                    sql.push_str(&format!(
                        "INSERT INTO delivered (message_out_id, platform_message_id, status, delivered_at) VALUES ('out-{i}', {pmid}, '{dstatus}', '2026-04-21 12:06:00');\n"
                    ));
                } else {
                    sql.push_str(&format!(
                        "INSERT INTO delivered (message_out_id, delivered_at) VALUES ('out-{i}', '2026-04-21 12:06:00');\n"
                    ));
                }
            }
            if g >= 1 {
                sql.push_str(
                    "INSERT INTO destinations (name, display_name, type, channel_type, platform_id) \
                     VALUES ('team', 'Team', 'channel', 'slack', 'C1');\n",
                );
            }
            if g >= 3 {
                sql.push_str(
                    "INSERT INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, 'slack', 'C1', 't-1');\n",
                );
            }
        }
        FileKind::Outbound => {
            for i in 0..n {
                let seq = 2 * (i + 1) + 1;
                sql.push_str(&format!(
                    "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, platform_id, channel_type, thread_id, content) \
                     VALUES ('out-{i}', {seq}, 'in-{i}', '2026-04-21 12:06:00', 'chat', 'chat-1', 'slack', 't-1', '{{\"text\":\"reply {i}\"}}');\n"
                ));
                sql.push_str(&format!(
                    "INSERT INTO processing_ack (message_id, status, status_changed) VALUES ('in-{i}', 'completed', '2026-04-21 12:06:00');\n"
                ));
            }
            if g >= 5 {
                sql.push_str(
                    "INSERT INTO container_state (id, current_tool, updated_at) VALUES (1, 'Bash', '2026-04-21T12:06:00.000Z');\n",
                );
            }
        }
    }
    sql
}

/// Rows for a legacy `session_state` of the given shape. A seed-patched table holds a row
/// written before the patch (its `updated_at` is the patch's default `''`) and one after.
pub fn sample_session_state_sql(state: SessionStateShape) -> String {
    match state {
        SessionStateShape::NoUpdatedAt => {
            "INSERT INTO session_state (key, value) VALUES ('sdk_session_id', 'abc');\n\
             INSERT INTO session_state (key, value) VALUES ('continuation:claude', 'xyz');\n"
                .into()
        }
        SessionStateShape::SeedPatched => {
            "INSERT INTO session_state (key, value) VALUES ('sdk_session_id', 'abc');\n\
             INSERT INTO session_state (key, value, updated_at) \
             VALUES ('continuation:claude', 'xyz', '2026-04-21T12:07:00.000Z');\n"
                .into()
        }
        SessionStateShape::Current => "INSERT INTO session_state (key, value, updated_at) \
             VALUES ('sdk_session_id', 'abc', '2026-04-21T12:06:00.000Z');\n\
             INSERT INTO session_state (key, value, updated_at) \
             VALUES ('continuation:claude', 'xyz', '2026-04-21T12:07:00.000Z');\n"
            .into(),
    }
}

/// Creates a legacy file of generation `g` at `path` (DELETE journal mode, no migrations
/// table) holding `n` sample messages.
pub fn create(path: &Path, kind: FileKind, g: u8, style: Style, n: usize) -> Result<(), String> {
    create_with(path, kind, g, style, SessionStateShape::Current, n)
}

/// Like [`create`], choosing the legacy `session_state` shape of an outbound.db.
pub fn create_with(
    path: &Path,
    kind: FileKind,
    g: u8,
    style: Style,
    state: SessionStateShape,
    n: usize,
) -> Result<(), String> {
    let mut conn =
        SqliteConnection::establish(&path.to_string_lossy()).map_err(|e| e.to_string())?;
    let ddl = match kind {
        FileKind::Inbound => inbound_ddl(g, style),
        FileKind::Outbound => outbound_ddl(g, state),
    };
    let mut sql = format!("PRAGMA journal_mode = DELETE;\nBEGIN;\n{ddl}");
    sql.push_str(&sample_rows_sql(kind, g, n));
    if kind == FileKind::Outbound && g >= 2 {
        sql.push_str(&sample_session_state_sql(state));
    }
    sql.push_str("COMMIT;\n");
    conn.batch_execute(&sql).map_err(|e| format!("{e}: {sql}"))
}
