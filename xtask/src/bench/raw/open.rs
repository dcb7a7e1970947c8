//! The raw baseline's opens: the file checks before SQLite sees a file, the writer and reader
//! pragmas, the schema-version check, and the host's shape check of the container's file.

use super::RawSession;
use crate::bench::{err, BenchResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// Diesel's open flags (`SqliteConnection::establish`): the URI's `mode=` decides the access.
const FLAGS: OpenFlags = OpenFlags::SQLITE_OPEN_READ_WRITE
    .union(OpenFlags::SQLITE_OPEN_CREATE)
    .union(OpenFlags::SQLITE_OPEN_URI);

impl RawSession {
    fn check_versions(c: &Connection, known: &[String], write: bool) -> BenchResult<()> {
        let mut st = c
            .prepare("SELECT version FROM __diesel_schema_migrations")
            .map_err(err)?;
        let mut applied: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        applied.sort();
        if let Some(v) = known.iter().find(|v| applied.binary_search(v).is_err()) {
            return Err(format!("file lacks migration {v}"));
        }
        if write {
            if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
                return Err(format!("file is newer than the code: {v}"));
            }
        }
        Ok(())
    }

    /// The checks before an open: not a symlink, a regular file, an SQLite header (or an empty
    /// file); for a reader, not in WAL mode.
    fn precheck(path: &Path, reader: bool) -> BenchResult<()> {
        let meta = std::fs::symlink_metadata(path).map_err(err)?;
        if meta.file_type().is_symlink() || !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let mut f = std::fs::File::open(path).map_err(err)?;
        let mut buf = [0u8; 20];
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]).map_err(err)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(());
        }
        if n < 20 || &buf[..16] != b"SQLite format 3\0" {
            return Err(format!("{}: not an SQLite database", path.display()));
        }
        if reader && (buf[18] == 2 || buf[19] == 2) {
            return Err(format!("{}: WAL mode", path.display()));
        }
        Ok(())
    }

    /// Writer open: `busy_timeout`, `journal_mode` checked (DELETE), `synchronous = FULL`,
    /// `foreign_keys = ON`, the schema-version check.
    fn writer(path: &Path, uri: &str, known: &[String]) -> BenchResult<Connection> {
        Self::precheck(path, false)?;
        let c = Connection::open_with_flags(uri, FLAGS).map_err(err)?;
        c.execute_batch("PRAGMA busy_timeout = 5000").map_err(err)?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(format!("journal mode {mode}"));
        }
        c.execute_batch("PRAGMA synchronous = FULL").map_err(err)?;
        c.execute_batch("PRAGMA foreign_keys = ON").map_err(err)?;
        Self::check_versions(&c, known, true)?;
        Ok(c)
    }

    /// Reader open: `mode=ro` URI, `busy_timeout`, `mmap_size = 0`, `query_only`, a first read
    /// of `sqlite_master`, the journal-mode check (no WAL), the schema-version check.
    fn reader(path: &Path, uri: &str, known: &[String]) -> BenchResult<Connection> {
        Self::precheck(path, true)?;
        let c = Connection::open_with_flags(uri, FLAGS).map_err(err)?;
        c.execute_batch("PRAGMA busy_timeout = 5000").map_err(err)?;
        c.execute_batch("PRAGMA mmap_size = 0").map_err(err)?;
        c.execute_batch("PRAGMA query_only = ON").map_err(err)?;
        let _n: i64 = c
            .query_row("SELECT count(*) AS n FROM sqlite_master", [], |r| r.get(0))
            .map_err(err)?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(err)?;
        if mode.eq_ignore_ascii_case("wal") {
            return Err("WAL mode".into());
        }
        Self::check_versions(&c, known, false)?;
        Ok(c)
    }

    pub(super) fn in_writer(&self) -> BenchResult<Connection> {
        Self::writer(&self.inbound, &self.in_rw, &self.in_versions)
    }
    pub(super) fn in_reader(&self) -> BenchResult<Connection> {
        Self::reader(&self.inbound, &self.in_ro, &self.in_versions)
    }
    pub(super) fn out_writer(&self) -> BenchResult<Connection> {
        Self::writer(&self.outbound, &self.out_rw, &self.out_versions)
    }
    pub(super) fn out_reader(&self) -> BenchResult<Connection> {
        let c = Self::reader(&self.outbound, &self.out_ro, &self.out_versions)?;
        Self::shape_check(&c)?;
        Ok(c)
    }

    /// The host's check of the container's schema before it reads (`schema::untrusted`'s
    /// shape check, the same statements): at most `MAX_SCHEMA_ENTRIES` entries, no view, every
    /// table read an ordinary table with the columns selected and none generated.
    fn shape_check(c: &Connection) -> BenchResult<()> {
        use sessionbus_schema::untrusted::{HOST_READS_OUTBOUND, MAX_SCHEMA_ENTRIES};
        let mut st = c
            .prepare(&format!(
                "SELECT type AS kind, name, sql FROM sqlite_master LIMIT {}",
                MAX_SCHEMA_ENTRIES + 1
            ))
            .map_err(err)?;
        let rows: Vec<(String, String, Option<String>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if rows.len() as i64 > MAX_SCHEMA_ENTRIES || rows.iter().any(|r| r.0 == "view") {
            return Err("raw: schema refused".into());
        }
        for t in HOST_READS_OUTBOUND {
            let Some(entry) = rows.iter().find(|r| r.1.eq_ignore_ascii_case(t.name)) else {
                if t.required {
                    return Err(format!("raw: table {} is missing", t.name));
                }
                continue;
            };
            let plain = entry.0.eq_ignore_ascii_case("table")
                && entry.2.as_deref().is_some_and(|sql| {
                    sql.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("create table")
                });
            if !plain {
                return Err(format!("raw: {} is not an ordinary table", t.name));
            }
            let mut st = c
                .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1) LIMIT 200")
                .map_err(err)?;
            let columns: Vec<(String, i64)> = st
                .query_map([t.name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            if columns.iter().any(|c| c.1 != 0)
                || !t
                    .columns
                    .iter()
                    .all(|want| columns.iter().any(|c| c.0.eq_ignore_ascii_case(want)))
            {
                return Err(format!("raw: {} has the wrong columns", t.name));
            }
        }
        Ok(())
    }
}
