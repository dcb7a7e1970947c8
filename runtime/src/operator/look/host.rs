//! inbound.db in the split layout: a folder only the host writes, so the schema crate's own
//! read-only connections are used (a WAL-mode file as an immutable snapshot).

use super::{migrate_hint, open_retrying, schema_note, FileLook, Reader, SchemaReport};
use sessionbus_schema::conn::{sniff_header, FileHeader};
use sessionbus_schema::migrate::{self, FileState};
use sessionbus_schema::{DbError, DbFile, FileKind, Role};
use sessionbus_store::SessionPaths;
use std::path::PathBuf;

/// inbound.db in a folder only the host writes.
pub(super) fn look_host_inbound(
    paths: &SessionPaths,
    problems: &mut Vec<String>,
) -> (FileLook, Option<Reader>) {
    const OP: &str = "inspect";
    let path = &paths.inbound;
    let name = FileKind::Inbound.file_name();
    let mut look = FileLook::new(FileKind::Inbound, path, false);
    look.journal = sessionbus_schema::error::hot_journal(path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if std::fs::symlink_metadata(&p).is_ok() {
            look.wal_files.push(p);
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            look.fail(problems, format!("{name} is not a regular file"));
            return (look, None);
        }
        Ok(m) => look.size = Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            look.missing = true;
            look.fail(
                problems,
                format!("{name} is missing: the host provisions it before a container starts"),
            );
            return (look, None);
        }
        Err(e) => {
            look.fail(problems, format!("{name}: {e}"));
            return (look, None);
        }
    }
    if !look.wal_files.is_empty() {
        let names: Vec<String> = look
            .wal_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        problems.push(format!(
            "{name}: {} next to it: WAL files do not work across the container mount; its \
             writer switches the file back to journal_mode=DELETE on its next open",
            names.join(" and ")
        ));
    }
    let header = match sniff_header(path) {
        Ok(h) => h,
        Err(e) => {
            look.fail(problems, format!("{name}: cannot read its header: {e}"));
            return (look, None);
        }
    };
    let file = DbFile::new(path, FileKind::Inbound, Role::Operator);
    let opened = match header {
        FileHeader::NotSqlite => {
            look.fail(problems, format!("{name} is not an SQLite database"));
            return (look, None);
        }
        FileHeader::Empty => {
            look.schema = Some(SchemaReport::of(&FileState::Empty, FileKind::Inbound));
            look.fail(
                problems,
                format!("{name} is empty: provision the session (the host creates it)"),
            );
            return (look, None);
        }
        FileHeader::Sqlite { wal: true } => {
            look.wal_mode = true;
            problems.push(format!(
                "{name} is in WAL journal mode, which does not work across the container mount \
                 (the other side reads a stale snapshot). Its writer (the host) switches it back \
                 to DELETE on its next open, or run `{}`. Shown here: the main file only, as an \
                 immutable snapshot; anything still in a -wal file is not shown.",
                migrate_hint(&paths.dir)
            ));
            file.open_snapshot(OP).map(|c| (c, true))
        }
        FileHeader::Sqlite { wal: false } => open_retrying(&file, OP, None).map(|c| (c, false)),
    };
    let (mut conn, snapshot) = match opened {
        Ok(c) => c,
        Err(DbError::HotJournal { journal, .. }) => {
            look.fail(
                problems,
                format!(
                    "{name} has a hot journal ({}): its writer (the host) died mid-transaction. \
                     The main file may hold half a transaction, so nothing is read from it; the \
                     host rolls it back on its next write. inspect leaves it as it is.",
                    journal.display()
                ),
            );
            return (look, None);
        }
        Err(e) => {
            look.fail(problems, format!("{name}: {e}"));
            return (look, None);
        }
    };
    match migrate::inspect(&mut conn, &file, OP) {
        Ok(state) => {
            let schema = SchemaReport::of(&state, FileKind::Inbound);
            look.schema_note = schema_note(&schema, FileKind::Inbound, &paths.dir);
            let current = schema.is_current();
            look.schema = Some(schema);
            look.state = Some(state);
            if current {
                look.read = if snapshot { "snapshot" } else { "file" };
                (look, Some(Reader { conn, snapshot }))
            } else {
                (look, None)
            }
        }
        Err(e) => {
            look.fail(problems, format!("{name}: {e}"));
            (look, None)
        }
    }
}
