//! The diesel `table!` definitions in `inbound.rs` / `outbound.rs` agree with the SQL the
//! migrations produce: same tables, same columns, same types and nullability. A drift here
//! is a query that compiles and then fails (or silently reads NULL into a non-null field).

use crate::common::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{Column, QueryDsl, Table};
use sessionbus_schema::{inbound, migrate, outbound, FileKind};
use std::collections::BTreeMap;

/// The SQLite declared type and nullability a diesel SQL type stands for.
trait SqliteDecl {
    const DECL: &'static str;
    const NULLABLE: bool;
}

impl SqliteDecl for Text {
    const DECL: &'static str = "TEXT";
    const NULLABLE: bool = false;
}

impl SqliteDecl for BigInt {
    const DECL: &'static str = "INTEGER";
    const NULLABLE: bool = false;
}

impl<T: SqliteDecl + diesel::sql_types::SqlType> SqliteDecl for Nullable<T> {
    const DECL: &'static str = T::DECL;
    const NULLABLE: bool = true;
}

/// A column as declared by `table!`: SQL name, declared type, nullable.
type Declared = (&'static str, &'static str, bool);

/// Walks the tuple `Table::all_columns()` returns.
trait DescribeColumns {
    fn describe(out: &mut Vec<Declared>);
}

macro_rules! describe_tuple {
    ($($c:ident),+) => {
        impl<$($c),+> DescribeColumns for ($($c,)+)
        where
            $($c: Column, <$c as diesel::Expression>::SqlType: SqliteDecl,)+
        {
            fn describe(out: &mut Vec<Declared>) {
                $(
                    out.push((
                        <$c as Column>::NAME,
                        <<$c as diesel::Expression>::SqlType as SqliteDecl>::DECL,
                        <<$c as diesel::Expression>::SqlType as SqliteDecl>::NULLABLE,
                    ));
                )+
            }
        }
    };
}

describe_tuple!(A);
describe_tuple!(A, B);
describe_tuple!(A, B, C);
describe_tuple!(A, B, C, D);
describe_tuple!(A, B, C, D, E);
describe_tuple!(A, B, C, D, E, F);
describe_tuple!(A, B, C, D, E, F, G);
describe_tuple!(A, B, C, D, E, F, G, H);
describe_tuple!(A, B, C, D, E, F, G, H, I);
describe_tuple!(A, B, C, D, E, F, G, H, I, J);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M, N);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q);
describe_tuple!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R);

/// One `table!`: its SQL name (read off the query diesel builds, so that it is the macro's
/// own and not a string typed here) and its columns.
fn declared<T>(table: T) -> (String, Vec<Declared>)
where
    T: Table + QueryDsl + diesel::query_builder::AsQuery,
    T::AllColumns: DescribeColumns,
    T::Query: diesel::query_builder::QueryFragment<Sqlite>,
{
    let sql = diesel::debug_query::<Sqlite, _>(&table.as_query()).to_string();
    let from = sql
        .split(" FROM ")
        .nth(1)
        .unwrap_or_else(|| panic!("no FROM in {sql}"));
    let name = from
        .trim_start_matches('`')
        .split('`')
        .next()
        .unwrap_or_else(|| panic!("no table name in {sql}"))
        .to_string();
    let mut cols = Vec::new();
    T::AllColumns::describe(&mut cols);
    (name, cols)
}

fn inbound_tables() -> Vec<(String, Vec<Declared>)> {
    vec![
        declared(inbound::messages_in::table),
        declared(inbound::delivered::table),
        declared(inbound::destinations::table),
        declared(inbound::session_routing::table),
        declared(inbound::host_replies::table),
        declared(inbound::delivery_attempts::table),
        declared(inbound::host_cursor::table),
        declared(inbound::claim_records::table),
        declared(inbound::held_outbound::table),
    ]
}

fn outbound_tables() -> Vec<(String, Vec<Declared>)> {
    vec![
        declared(outbound::messages_out::table),
        declared(outbound::processing_ack::table),
        declared(outbound::session_state::table),
        declared(outbound::container_state::table),
        declared(outbound::failure_notes::table),
        declared(outbound::container_activity::table),
    ]
}

/// What a migrated file says about one column: declared type, and whether it can hold NULL.
///
/// `pragma_table_info` reports `notnull = 0` for an `INTEGER PRIMARY KEY` column although it
/// can never be NULL: it is the rowid, and inserting NULL assigns the next rowid instead. So
/// such a column counts as non-null. A `TEXT PRIMARY KEY` is different: SQLite (for
/// backwards compatibility) lets it hold NULL unless it says NOT NULL. The upstream shape
/// cannot be changed, so the key columns are treated as non-null here too (a row without an
/// id is not a message, and diesel's `table!` needs a non-null key); this is a convention
/// of the writers, not something SQLite enforces.
fn file_columns(path: &std::path::Path) -> BTreeMap<String, Vec<(String, String, bool)>> {
    let mut c = raw(path);
    let mut out = BTreeMap::new();
    for t in tables(&mut c) {
        let cols = columns(&mut c, &t)
            .into_iter()
            .map(|col| {
                let nullable = !col.not_null && col.pk == 0;
                (col.name, col.col_type, nullable)
            })
            .collect();
        out.insert(t, cols);
    }
    out
}

fn compare(kind: FileKind, declared: Vec<(String, Vec<Declared>)>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(kind.file_name());
    migrated(&path, kind);
    let in_file = file_columns(&path);

    let declared: BTreeMap<String, Vec<Declared>> = declared.into_iter().collect();
    let declared_names: Vec<&String> = declared.keys().collect();
    let file_names: Vec<&String> = in_file.keys().collect();
    assert_eq!(
        declared_names, file_names,
        "{kind}: tables with a table! definition vs tables in a migrated file"
    );

    for (table, cols) in &declared {
        let file_cols = &in_file[table];
        let mut d: Vec<(String, String, bool)> = cols
            .iter()
            .map(|(n, t, null)| (n.to_string(), t.to_string(), *null))
            .collect();
        let mut f = file_cols.clone();
        d.sort();
        f.sort();
        assert_eq!(
            d, f,
            "{kind}: table {table}: table! columns (name, type, nullable) vs migrated SQL"
        );
    }
}

#[test]
fn inbound_table_definitions_match_the_migrated_sql() {
    compare(FileKind::Inbound, inbound_tables());
}

#[test]
fn outbound_table_definitions_match_the_migrated_sql() {
    compare(FileKind::Outbound, outbound_tables());
}

#[test]
fn the_comparison_sees_types_nullability_and_sql_names() {
    // The helpers above must not be vacuous: spot-check what they read for known columns.
    let (name, cols) = declared(inbound::destinations::table);
    assert_eq!(name, "destinations");
    assert!(cols.contains(&("type", "TEXT", false)), "{cols:?}");
    let (_, cols) = declared(inbound::messages_in::table);
    assert_eq!(cols.len(), 16);
    assert!(cols.contains(&("seq", "INTEGER", true)));
    assert!(cols.contains(&("trigger", "INTEGER", false)));
    let (name, cols) = declared(outbound::container_state::table);
    assert_eq!(name, "container_state");
    assert!(cols.contains(&("tool_declared_timeout_ms", "INTEGER", true)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbound.db");
    migrated(&path, FileKind::Outbound);
    let f = file_columns(&path);
    // INTEGER PRIMARY KEY: notnull = 0 in the pragma, non-null here.
    assert!(f["container_state"].contains(&("id".into(), "INTEGER".into(), false)));
    assert!(f["container_state"].contains(&("current_tool".into(), "TEXT".into(), true)));
    assert!(f["container_activity"].contains(&("busy_since".into(), "TEXT".into(), true)));
    assert!(f["failure_notes"].contains(&("reason".into(), "TEXT".into(), false)));
    assert!(f["session_state"].contains(&("updated_at".into(), "TEXT".into(), false)));
}

#[test]
fn the_two_files_share_no_table() {
    let inbound: Vec<String> = inbound_tables().into_iter().map(|t| t.0).collect();
    for (t, _) in outbound_tables() {
        assert!(!inbound.contains(&t), "{t} is declared for both files");
    }
    // Both expected shapes are non-empty and disjoint too.
    let a = migrate::expected_shape(FileKind::Inbound).unwrap();
    let b = migrate::expected_shape(FileKind::Outbound).unwrap();
    assert!(!a.tables.is_empty() && !b.tables.is_empty());
    assert!(a.tables.keys().all(|t| !b.tables.contains_key(t)));
}
