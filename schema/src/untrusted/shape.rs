//! What the host accepts as the schema of a file the container wrote, checked against
//! `sqlite_master` before any other statement runs.
//!
//! The container may be this library, the older TypeScript implementation, or an attacker, so
//! the check is structural rather than a version number (the migrations table is the
//! container's to forge too): every table the host reads is an ordinary table (not a view,
//! not a virtual table, whose module would run code over bytes the container chose) with the
//! columns the host selects, none of them generated (a generated column evaluates an
//! expression the container wrote on every read). No view may exist at all. Triggers may
//! exist (this library's own container keeps parity triggers); they are switched off on the
//! host's connection and never fire on a read anyway.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

/// One table the host reads from a file it does not trust.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedTable {
    /// The table's name.
    pub name: &'static str,
    /// Whether a file without it is refused (an optional table reads as empty).
    pub required: bool,
    /// The columns the host selects; each must exist.
    pub columns: &'static [&'static str],
}

/// The tables the host reads from `outbound.db`, in every generation the container may keep
/// (`container_state` arrived in generation G5; the others have had these columns from the
/// start).
pub const HOST_READS_OUTBOUND: &[ExpectedTable] = &[
    ExpectedTable {
        name: "messages_out",
        required: true,
        columns: &[
            "id",
            "seq",
            "in_reply_to",
            "timestamp",
            "deliver_after",
            "recurrence",
            "kind",
            "platform_id",
            "channel_type",
            "thread_id",
            "content",
        ],
    },
    ExpectedTable {
        name: "processing_ack",
        required: true,
        columns: &["message_id", "status", "status_changed"],
    },
    ExpectedTable {
        name: "container_state",
        required: false,
        columns: &[
            "id",
            "current_tool",
            "tool_declared_timeout_ms",
            "tool_started_at",
            "updated_at",
        ],
    },
];

/// More schema entries than any real file of either implementation has, by far: a file with
/// more is refused before the host parses them all.
pub const MAX_SCHEMA_ENTRIES: i64 = 1000;

#[derive(QueryableByName)]
struct MasterRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    sql: Option<String>,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    hidden: i64,
}

/// Checks `conn`'s schema against `tables`. `Err` carries the reason, for a
/// [`crate::DbError::RefusedSchema`].
pub(crate) fn check(
    conn: &mut SqliteConnection,
    tables: &[ExpectedTable],
) -> Result<(), ShapeError> {
    let rows: Vec<MasterRow> = diesel::sql_query(format!(
        "SELECT type AS kind, name, sql FROM sqlite_master LIMIT {}",
        MAX_SCHEMA_ENTRIES + 1
    ))
    .load(conn)?;
    if rows.len() as i64 > MAX_SCHEMA_ENTRIES {
        return Err(ShapeError::Refused(format!(
            "more than {MAX_SCHEMA_ENTRIES} schema entries"
        )));
    }
    if let Some(view) = rows.iter().find(|r| r.kind.eq_ignore_ascii_case("view")) {
        return Err(ShapeError::Refused(format!(
            "it defines a view ({:?}); views are never read from the container's file",
            view.name
        )));
    }
    for t in tables {
        let entry = rows.iter().find(|r| r.name.eq_ignore_ascii_case(t.name));
        let Some(entry) = entry else {
            if t.required {
                return Err(ShapeError::Refused(format!("table {} is missing", t.name)));
            }
            continue;
        };
        if !entry.kind.eq_ignore_ascii_case("table") {
            return Err(ShapeError::Refused(format!(
                "{} is a {}, not a table",
                t.name, entry.kind
            )));
        }
        if !is_plain_create_table(entry.sql.as_deref().unwrap_or("")) {
            return Err(ShapeError::Refused(format!(
                "{} is not an ordinary table (a virtual table, or no CREATE TABLE statement)",
                t.name
            )));
        }
        let columns: Vec<ColumnRow> =
            diesel::sql_query("SELECT name, hidden FROM pragma_table_xinfo(?) LIMIT 200")
                .bind::<Text, _>(t.name)
                .load(conn)?;
        if let Some(c) = columns.iter().find(|c| c.hidden != 0) {
            return Err(ShapeError::Refused(format!(
                "{}.{} is a generated or hidden column",
                t.name, c.name
            )));
        }
        for want in t.columns {
            if !columns.iter().any(|c| c.name.eq_ignore_ascii_case(want)) {
                return Err(ShapeError::Refused(format!(
                    "{} has no column {want}",
                    t.name
                )));
            }
        }
    }
    Ok(())
}

/// True for `CREATE TABLE ...` (any case and spacing), false for `CREATE VIRTUAL TABLE`,
/// `CREATE TEMP TABLE` (a file cannot hold one) and anything else.
fn is_plain_create_table(sql: &str) -> bool {
    fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
        let s = s.trim_start();
        let head = s.get(..word.len())?;
        let rest = s.get(word.len()..)?;
        let boundary = !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        (head.eq_ignore_ascii_case(word) && boundary).then_some(rest)
    }
    keyword(sql, "create")
        .and_then(|rest| keyword(rest, "table"))
        .is_some()
}

/// A failed schema check.
pub(crate) enum ShapeError {
    /// The schema is not one the host reads.
    Refused(String),
    /// A statement of the check itself failed (a limit, the deadline, a corrupt page).
    Query(diesel::result::Error),
}

impl From<diesel::result::Error> for ShapeError {
    fn from(e: diesel::result::Error) -> Self {
        ShapeError::Query(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordinary_create_table_statements_pass() {
        for ok in [
            "CREATE TABLE messages_out (id TEXT)",
            "create   table \"x\"(a)",
            "CREATE TABLE(a)",
            "CREATE\nTABLE x (a)",
        ] {
            assert!(is_plain_create_table(ok), "{ok}");
        }
        for bad in [
            "CREATE VIRTUAL TABLE messages_out USING fts5(content)",
            "",
            "CREATE VIEW x AS SELECT 1",
            "CREATE TEMP TABLE x(a)",
        ] {
            assert!(!is_plain_create_table(bad), "{bad}");
        }
    }
}
