//! A folder the older host created and never migrated: the container serves it as it is.
//!
//! The older host writes inbound.db in whatever generation it is (patching `messages_in`
//! columns, nothing else) and never migrates it; the container opens it read-only and cannot.
//! So the container reads every generation that has what it needs (absent columns read as
//! their defaults), without migrating inbound.db and without touching outbound.db before it
//! knows it can run; a file it cannot serve gets one clear error and the folder stays as it
//! was.

use diesel::connection::SimpleConnection;
use diesel::Connection;
use sessionbus_schema::FileKind;
use sessionbus_store::{
    AckStatus, ContainerSession, NewOutbound, SessionPaths, StoreError, SystemClock,
};
use sessionbus_testkit::legacy::{self, Style};
use std::sync::Arc;

fn exec(path: &std::path::Path, sql: &str) {
    diesel::SqliteConnection::establish(&path.to_string_lossy())
        .unwrap()
        .batch_execute(sql)
        .unwrap();
}

/// An older host's single folder with both files of generation `g`, and one pending message.
fn older_folder(g: u8) -> (tempfile::TempDir, SessionPaths) {
    let root = tempfile::tempdir().unwrap();
    let paths = SessionPaths::single(root.path().join("s"));
    std::fs::create_dir_all(&paths.dir).unwrap();
    legacy::create(&paths.inbound, FileKind::Inbound, g, Style::Created, 0).unwrap();
    legacy::create(&paths.outbound, FileKind::Outbound, g, Style::Created, 0).unwrap();
    exec(
        &paths.inbound,
        "INSERT INTO messages_in (id, seq, kind, timestamp, status, content) VALUES \
         ('old-1', 2, 'chat', '2026-04-21T12:00:00.000Z', 'pending', '{\"text\":\"hi\"}');",
    );
    (root, paths)
}

#[test]
fn every_generation_is_served_as_it_is() {
    for g in 0..=8u8 {
        let (_root, paths) = older_folder(g);
        let inbound_before = std::fs::read(&paths.inbound).unwrap();
        let c = ContainerSession::with_paths(paths.clone(), Arc::new(SystemClock)).unwrap();
        c.start().unwrap_or_else(|e| panic!("G{g}: {e}"));
        let batch = c.poll_after_start(10).unwrap();
        assert_eq!(batch.ids(), ["old-1"], "G{g}");
        let m = &batch.messages[0];
        assert!(m.trigger && !m.on_wake, "G{g}: defaults");
        assert_eq!(m.series_id.as_deref(), Some("old-1"), "G{g}");
        c.outbound()
            .ack(&batch.ids(), &AckStatus::Processing)
            .unwrap();
        let seqs = c
            .outbound()
            .commit(
                &batch.ids(),
                &AckStatus::Completed,
                &[NewOutbound::reply_to("r1", m, "echo: hi")],
            )
            .unwrap();
        assert_eq!(seqs[0].get(), 3, "G{g}: the next odd seq above the host's");
        // Tables a generation lacks read as empty.
        c.inbound().routing().unwrap();
        c.inbound().destinations().unwrap();
        assert!(
            c.lookup_seq(sessionbus_store::Seq::new(2).unwrap())
                .unwrap()
                .is_some(),
            "G{g}"
        );
        assert!(
            c.lookup_seq(sessionbus_store::Seq::new(3).unwrap())
                .unwrap()
                .is_some(),
            "G{g}"
        );
        assert_eq!(
            std::fs::read(&paths.inbound).unwrap(),
            inbound_before,
            "G{g}: the host's file is read, never written"
        );
    }
}

#[test]
fn a_file_that_cannot_be_served_leaves_the_folder_exactly_as_it_was() {
    let (_root, paths) = older_folder(8);
    // Not a messages_in any generation ever had.
    exec(
        &paths.inbound,
        "DROP TABLE messages_in; CREATE TABLE messages_in (id TEXT PRIMARY KEY, body TEXT);",
    );
    let before: Vec<(String, Vec<u8>)> = ["inbound.db", "outbound.db"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(paths.dir.join(f)).unwrap()))
        .collect();
    let c = ContainerSession::with_paths(paths.clone(), Arc::new(SystemClock)).unwrap();
    let err = c.start().unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    for (f, bytes) in before {
        assert_eq!(
            std::fs::read(paths.dir.join(&f)).unwrap(),
            bytes,
            "{f} changed"
        );
    }
    assert!(!paths.dir.join("outbound.db-journal").exists());
}

/// The host migrates its own file when it opens one the older host left (it is its writer),
/// and the migrated file stays readable and writable the older implementation's way.
#[test]
fn the_host_migrates_an_older_hosts_inbound_db_on_its_first_write() {
    for g in [0u8, 4, 8] {
        let (_root, paths) = older_folder(g);
        let host = sessionbus_store::HostSession::with_paths(paths.clone(), Arc::new(SystemClock));
        let w = host
            .inbound()
            .write_message(&sessionbus_store::NewMessage::chat("new-1", "hello"))
            .unwrap_or_else(|e| panic!("G{g}: {e}"));
        assert_eq!(
            w.seq.get(),
            4,
            "G{g}: the next even seq above the older host's"
        );
        assert_eq!(
            host.inbound().pending().unwrap().len(),
            2,
            "G{g}: every row kept"
        );
        // The older host's own statements still work on the migrated file.
        exec(
            &paths.inbound,
            "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, \
             recurrence, series_id, tries, trigger, platform_id, channel_type, thread_id, \
             content, source_session_id, on_wake) VALUES ('old-2', 6, 'chat', \
             '2026-04-21T12:00:01.000Z', 'pending', NULL, NULL, 'old-2', 0, 1, NULL, NULL, \
             NULL, '{}', NULL, 0); \
             UPDATE messages_in SET status = 'completed' WHERE id = 'old-1' \
             AND status != 'completed';",
        );
        assert_eq!(host.inbound().pending().unwrap().len(), 2, "G{g}");
    }
}

/// A host reply (the gate's denial) is visible to the older implementation: its even-seq
/// allocation (`MAX(seq)` over `messages_in` only, then the next even number) never reuses the
/// reply's seq, and its lookup by seq (inbound first) finds it; the library's own lookup still
/// names the delivered platform id, and the mirror never reaches an agent.
#[test]
fn a_host_reply_is_seen_by_the_older_implementations_statements() {
    use diesel::sql_types::{BigInt, Nullable, Text};
    use diesel::{QueryableByName, RunQueryDsl};
    let root = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(root.path().join("s"));
    sessionbus_store::provision(&paths, None, &SystemClock).unwrap();
    let host = sessionbus_store::HostSession::with_paths(paths.clone(), Arc::new(SystemClock));
    let seq = host
        .inbound()
        .write_host_reply(&sessionbus_store::NewHostReply {
            id: "m1-denied".into(),
            in_reply_to: Some("m1".into()),
            address: Default::default(),
            content: r#"{"text":"Permission denied: /cost requires admin access."}"#.into(),
        })
        .unwrap();
    #[derive(QueryableByName)]
    struct M {
        #[diesel(sql_type = Nullable<BigInt>)]
        m: Option<i64>,
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let mut c = diesel::SqliteConnection::establish(&paths.inbound.to_string_lossy()).unwrap();
    // The older host's nextEvenSeq, exactly.
    let m = diesel::sql_query("SELECT MAX(seq) AS m FROM messages_in")
        .get_result::<M>(&mut c)
        .unwrap()
        .m
        .unwrap_or(0);
    let next = if m < 2 { 2 } else { m + 2 - m % 2 };
    assert!(
        next > seq.get(),
        "the older host's next seq {next} would reuse {}",
        seq.get()
    );
    // The older container's lookup by seq: inbound first.
    let found: Vec<Row> = diesel::sql_query("SELECT id FROM messages_in WHERE seq = ?")
        .bind::<BigInt, _>(seq.get())
        .load(&mut c)
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "m1-denied");
    // Never pending: no agent ever gets it.
    assert!(host.inbound().pending().unwrap().is_empty());
    assert_eq!(host.inbound().count_due().unwrap(), 0);
    // The library's lookup gives the platform's id once delivered.
    host.inbound()
        .record_delivery(
            "m1-denied",
            &sessionbus_store::DeliveryOutcome::Delivered {
                platform_message_id: Some("P-77".into()),
            },
        )
        .unwrap();
    let c = ContainerSession::with_paths(paths.clone(), Arc::new(SystemClock)).unwrap();
    let target = c.lookup_seq(seq).unwrap().unwrap();
    assert_eq!(target.platform_message_id, "P-77");
    // Delivered once, as a host row.
    assert!(host.due_outbound(10).unwrap().is_empty());
}
