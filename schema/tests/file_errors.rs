//! What goes wrong with the file itself comes back as a typed `DbError` that names the file:
//! not a database, corrupt, locked, WAL mode, missing, a symlink, a hot journal left by a
//! writer that was killed mid-transaction.

mod common;

use common::*;
use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use sessionbus_schema::migrate::{self, Access};
use sessionbus_schema::{DbError, DbFile, FileKind};
use sessionbus_testkit::legacy::{self, Style};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every way into a file a caller has: reader, writer, migrate, dry run. Each must fail the
/// same way, name the file, and leave the folder as it was.
fn every_entry_fails(path: &Path, kind: FileKind, check: impl Fn(&DbError) -> bool) {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let writer = writer_file(path, kind);
    let reader = reader_file(path, kind);
    let results: Vec<(&str, DbError)> = vec![
        (
            "open_reader",
            reader.open_reader("read").err().expect("reader must fail"),
        ),
        (
            "open_writer",
            writer.open_writer("write").err().expect("writer must fail"),
        ),
        (
            "migrate",
            migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail)
                .expect_err("migrate must fail"),
        ),
        (
            "migrate create",
            migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Create)
                .expect_err("migrate must fail"),
        ),
        ("plan", migrate::plan(&writer).expect_err("plan must fail")),
    ];
    for (what, err) in results {
        assert!(
            check(&err),
            "{what} on {}: unexpected {err:?}",
            path.display()
        );
        assert_eq!(err.at().path, path, "{what}: the error names the file");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{what}: {err}"
        );
    }
    assert_same_folder(&before, &snapshot(dir), "failed opens");
}

#[test]
fn a_text_file_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    std::fs::write(&path, "this is a text file, not SQLite\n").unwrap();
    every_entry_fails(&path, FileKind::Inbound, |e| {
        matches!(e, DbError::NotADatabase { .. })
    });
    // Shorter than a header, too.
    std::fs::write(&path, "hi").unwrap();
    every_entry_fails(&path, FileKind::Inbound, |e| {
        matches!(e, DbError::NotADatabase { .. })
    });
}

#[test]
fn an_sqlite_header_over_garbage_is_not_a_database() {
    // Passes the header sniff; SQLite itself rejects the page size.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbound.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xEEu8, 4096 - bytes.len()));
    std::fs::write(&path, &bytes).unwrap();
    every_entry_fails(&path, FileKind::Outbound, |e| {
        matches!(e, DbError::NotADatabase { .. })
    });
}

/// Overwrites page 2 (the root of the first table created) with garbage.
fn smash_page_two(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() >= 3 * page, "file too small to corrupt page 2");
    for b in &mut bytes[page..2 * page] {
        *b = 0xAB;
    }
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn garbage_over_page_two_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 3, Style::Patched, 300).unwrap();
    smash_page_two(&path);

    // A read of the damaged table, through the library's reader.
    let reader = reader_file(&path, FileKind::Inbound);
    let mut c = reader.open_reader("count messages").unwrap();
    let e = diesel::sql_query("SELECT count(*) AS n FROM messages_in WHERE kind <> ''")
        .execute(&mut c)
        .unwrap_err();
    let err = reader.err("count messages", e);
    match &err {
        DbError::Corrupt { at, detail } => {
            assert_eq!(at.path, path);
            assert!(detail.contains("malformed"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!err.is_retryable());
    drop(c);

    // Adoption reads the table (series_id backfill): migrate reports it and changes nothing.
    let before = snapshot(dir.path());
    let err = migrate::migrate(
        &writer_file(&path, FileKind::Inbound),
        t0(),
        sessionbus_schema::migrate::IfMissing::Fail,
    )
    .unwrap_err();
    assert!(matches!(err, DbError::Corrupt { .. }), "{err:?}");
    assert_eq!(err.at().path, path);
    assert_same_folder(&before, &snapshot(dir.path()), "migrate of a corrupt file");
}

#[test]
fn a_writer_blocked_by_another_writer_is_locked_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 5, Style::Created, 3).unwrap();
    let short = Duration::from_millis(150);
    let writer = writer_file(&path, FileKind::Inbound).with_busy_timeout(short);

    // Another connection holds the write lock (RESERVED): readers still read, writers wait.
    let mut other = raw(&path);
    other
        .batch_execute(
            "BEGIN IMMEDIATE; INSERT INTO destinations (name, type) VALUES ('x', 'agent');",
        )
        .unwrap();
    let started = Instant::now();
    let err =
        migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail).unwrap_err();
    let waited = started.elapsed();
    match &err {
        DbError::Locked { at, timeout_ms } => {
            assert_eq!(*timeout_ms, 150);
            assert_eq!(at.path, path);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.is_retryable());
    // It waited (SQLite's busy handler sleeps up to the timeout in steps), not failed at once.
    assert!(
        waited >= short * 2 / 3,
        "gave up after {waited:?}, well before the busy timeout"
    );
    let reader = reader_file(&path, FileKind::Inbound).with_busy_timeout(short);
    reader.open_reader("read while locked").unwrap();

    // EXCLUSIVE: even readers wait, then give up with Locked.
    other.batch_execute("COMMIT; BEGIN EXCLUSIVE;").unwrap();
    let err = reader
        .open_reader("read while exclusive")
        .err()
        .expect("must fail");
    assert!(
        matches!(err, DbError::Locked { .. }) && err.is_retryable(),
        "{err:?}"
    );
    let err =
        migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail).unwrap_err();
    assert!(
        matches!(err, DbError::Locked { .. }) && err.is_retryable(),
        "{err:?}"
    );

    // Once the lock is gone the same calls succeed: the legacy file was never half-migrated.
    other.batch_execute("ROLLBACK;").unwrap();
    drop(other);
    let out = migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail).unwrap();
    assert!(matches!(out.before, migrate::FileState::Legacy { .. }));
    assert_eq!(
        count(&mut raw(&path), "destinations"),
        2,
        "committed row kept"
    );
}

#[test]
fn a_wal_file_is_refused_by_readers_and_switched_back_by_migrate() {
    for (what, migrated_first) in [("legacy", false), ("migrated", true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbound.db");
        if migrated_first {
            migrated(&path, FileKind::Inbound);
            raw_exec(
                &path,
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('m1', 2, 'chat', '2026-04-21T12:00:00.000Z', '{}')",
            );
        } else {
            legacy::create(&path, FileKind::Inbound, 4, Style::Patched, 5).unwrap();
        }
        make_wal(&path);
        let rows = dump_all(&mut raw(&path));
        // make_wal's connection checkpointed and removed its -wal on close.
        assert!(!dir.path().join("inbound.db-wal").exists());

        let before = snapshot(dir.path());
        let reader = reader_file(&path, FileKind::Inbound);
        let err = reader.open_reader("poll").err().expect("must fail");
        match &err {
            DbError::WalMode { at, mode } => {
                assert_eq!(mode, "wal");
                assert_eq!(at.path, path);
            }
            other => panic!("{what}: expected WalMode, got {other:?}"),
        }
        assert!(err.to_string().contains("WAL"), "{err}");
        assert_same_folder(&before, &snapshot(dir.path()), "reader on a WAL file");

        let out = migrate::migrate(
            &writer_file(&path, FileKind::Inbound),
            t0(),
            sessionbus_schema::migrate::IfMissing::Fail,
        )
        .unwrap();
        assert_eq!(out.switched_from.as_deref(), Some("wal"), "{what}");
        assert!(out.changed());
        assert_eq!(out.applied.is_empty(), migrated_first, "{what}: {out:?}");
        assert!(!header_is_wal(&path), "{what}: still WAL after migrate");
        for leftover in ["inbound.db-wal", "inbound.db-shm", "inbound.db-journal"] {
            assert!(
                !dir.path().join(leftover).exists(),
                "{what}: {leftover} left"
            );
        }
        let mut c = raw(&path);
        for (t, (cols, r)) in &rows {
            assert_eq!(&dump(&mut c, t, cols), r, "{what}: rows of {t}");
        }
        drop(c);
        let mut c = reader.open_reader("poll").unwrap();
        migrate::check_schema(&mut c, &reader, Access::Read, "poll").unwrap();
    }
}

#[test]
fn a_missing_file_is_not_found_and_nothing_is_created() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        let writer = writer_file(&path, kind);
        let reader = reader_file(&path, kind);
        for (what, err) in [
            (
                "open_reader",
                reader.open_reader("read").err().expect("must fail"),
            ),
            (
                "open_writer",
                writer.open_writer("write").err().expect("must fail"),
            ),
            (
                "migrate",
                migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail)
                    .unwrap_err(),
            ),
            ("plan", migrate::plan(&writer).unwrap_err()),
        ] {
            assert!(matches!(err, DbError::NotFound { .. }), "{what}: {err:?}");
            assert_eq!(err.at().path, path, "{what}");
            assert!(!err.is_retryable());
        }
        assert!(snapshot(dir.path()).is_empty(), "something was created");

        // A missing session folder: even provisioning refuses, naming the folder.
        let gone = dir.path().join("no-such-session").join(kind.file_name());
        let err = migrate::migrate(
            &writer_file(&gone, kind),
            t0(),
            sessionbus_schema::migrate::IfMissing::Create,
        )
        .unwrap_err();
        match &err {
            DbError::NotFound { at } => assert_eq!(at.path, gone.parent().unwrap()),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(snapshot(dir.path()).is_empty(), "something was created");
    }
}

#[test]
fn a_symlink_or_a_folder_in_place_of_the_file_is_an_unsafe_path() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("elsewhere.db");
    migrated(&real, FileKind::Inbound);
    let link = dir.path().join("inbound.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let real_bytes = std::fs::read(&real).unwrap();
    every_entry_fails(
        &link,
        FileKind::Inbound,
        |e| matches!(e, DbError::UnsafePath { detail, .. } if detail.contains("symbolic link")),
    );
    assert_eq!(std::fs::read(&real).unwrap(), real_bytes);

    // A dangling link must not be followed to create its target either.
    let dangling = dir.path().join("outbound.db");
    let target = dir.path().join("target-of-dangling.db");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    every_entry_fails(&dangling, FileKind::Outbound, |e| {
        matches!(e, DbError::UnsafePath { .. })
    });
    assert!(!target.exists());

    let sub = tempfile::tempdir().unwrap();
    let folder = sub.path().join("inbound.db");
    std::fs::create_dir(&folder).unwrap();
    every_entry_fails(&folder, FileKind::Inbound, |e| {
        matches!(e, DbError::UnsafePath { .. })
    });
}

// ---- Hot journal: a writer process killed in the middle of a transaction. ----

/// Set in the child process: the database it writes to.
const CHILD_ENV: &str = "SESSIONBUS_SCHEMA_TEST_HOT_JOURNAL_DB";
const COMMITTED: i64 = 10;
const UNCOMMITTED: i64 = 400;

/// The child: opens the file as its writer, starts a large transaction with a tiny page
/// cache so that changed pages spill into the database file itself (which needs the
/// journal to be written and synced first), reports, and waits to be killed.
fn child_writes_and_waits(db: &Path) -> ! {
    let file = DbFile::new(db, FileKind::Inbound, FileKind::Inbound.writer());
    let mut c = file
        .open_writer("doomed write")
        .expect("child: open writer");
    c.batch_execute("PRAGMA cache_size = 2; BEGIN IMMEDIATE;")
        .expect("child: begin");
    let size_before = std::fs::metadata(db).expect("child: stat").len();
    for i in 0..UNCOMMITTED {
        diesel::sql_query(format!(
            "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
             VALUES ('doomed-{i}', {}, 'chat', '2026-04-21T12:00:00.000Z', '{}')",
            1000 + 2 * i,
            "x".repeat(1500)
        ))
        .execute(&mut c)
        .expect("child: insert");
    }
    let size_after = std::fs::metadata(db).expect("child: stat").len();
    let journal = journal_of(db);
    let journal_len = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::stdout();
    writeln!(out, "READY {size_before} {size_after} {journal_len}").expect("child: report");
    out.flush().expect("child: flush");
    // The parent kills this process with SIGKILL: no rollback, no close, no unwinding.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_hot_journal_is_refused_by_readers_until_the_writer_rolls_it_back() {
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        child_writes_and_waits(&PathBuf::from(db));
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    let writer = migrated(&path, FileKind::Inbound);
    {
        let mut c = writer.open_writer("seed").unwrap();
        for i in 0..COMMITTED {
            diesel::sql_query(format!(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('kept-{i}', {}, 'chat', '2026-04-21T12:00:00.000Z', '{{}}')",
                2 + 2 * i
            ))
            .execute(&mut c)
            .unwrap();
        }
    }
    let committed_rows = dump_all(&mut raw(&path));

    // Re-run this very test in a child process, which takes the CHILD_ENV branch above.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_hot_journal_is_refused_by_readers_until_the_writer_rolls_it_back",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Read the child's report on a thread, so that a child that hangs fails the test
    // instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness prints "test <name> ... " on the same line, before the report.
            if let Some((_, rest)) = line.split_once("READY ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let report = rx.recv_timeout(Duration::from_secs(120)).ok();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader_thread.join().unwrap();
    assert!(!status.success(), "the child must have been killed");
    let report = report.expect("the child never reported: it failed before writing");
    let nums: Vec<u64> = report.split(' ').map(|n| n.parse().unwrap()).collect();
    let (size_before, size_after, journal_len) = (nums[0], nums[1], nums[2]);
    assert!(
        size_after > size_before,
        "pages must have spilled into the file ({size_before} -> {size_after})"
    );
    let journal = journal_of(&path);
    assert!(journal_len > 0 && journal.exists(), "no journal was left");

    // A reader cannot roll it back (it is read-only): a typed, retryable error, and the
    // reader changes nothing, journal included.
    let before = snapshot(dir.path());
    let reader = reader_file(&path, FileKind::Inbound);
    let err = reader.open_reader("poll").err().expect("must fail");
    match &err {
        DbError::HotJournal { at, journal: j } => {
            assert_eq!(at.path, path);
            assert_eq!(j, &journal);
        }
        other => panic!("expected HotJournal, got {other:?}"),
    }
    assert!(err.is_retryable());
    let plan_err = migrate::plan(&writer).unwrap_err();
    assert!(
        matches!(plan_err, DbError::HotJournal { .. }),
        "{plan_err:?}"
    );
    assert_same_folder(&before, &snapshot(dir.path()), "reader on a hot journal");

    // The file's writer opens it: SQLite rolls the journal back.
    drop(writer.open_writer("recover").unwrap());
    assert!(
        !journal.exists(),
        "the writer's open must roll the journal back"
    );
    let mut c = reader.open_reader("poll").unwrap();
    migrate::check_schema(&mut c, &reader, Access::Read, "poll").unwrap();
    drop(c);
    let mut c = raw(&path);
    assert_eq!(count(&mut c, "messages_in"), COMMITTED);
    assert_eq!(
        dump_all(&mut c),
        committed_rows,
        "uncommitted rows must be gone"
    );
    assert_eq!(
        text_values(
            &mut c,
            "SELECT integrity_check AS v FROM pragma_integrity_check"
        ),
        vec![Some("ok".to_string())]
    );
}

const FSIZE_CHILD_ENV: &str = "SESSIONBUS_SCHEMA_TEST_FSIZE_DB";

/// The child: under a file-size limit one page above the file's size (SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG instead of killing the process), commits rows one
/// transaction at a time until a write fails, and reports how many committed and the error.
fn child_writes_until_the_limit(db: &Path) -> ! {
    let limit = std::fs::metadata(db).expect("child: stat").len() + 4096;
    let lim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim),
            0,
            "child: setrlimit"
        );
    }
    let file = DbFile::new(db, FileKind::Inbound, FileKind::Inbound.writer());
    let mut committed = 0;
    let err = loop {
        let res = file.open_writer("write past the limit").and_then(|mut c| {
            diesel::sql_query(format!(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('fill-{committed}', {}, 'chat', '2026-04-21T12:00:00.000Z', '\"{}\"')",
                2 + 2 * committed,
                "x".repeat(1500)
            ))
            .execute(&mut c)
            .map_err(|e| file.err("write past the limit", e))
        });
        match res {
            Ok(_) => committed += 1,
            Err(e) => break e,
        }
        assert!(committed < 1000, "child: the limit never hit");
    };
    let kind = match &err {
        DbError::DiskFull { .. } => "DiskFull",
        _ => "other",
    };
    let mut out = std::io::stdout();
    writeln!(out, "RESULT {committed} {kind} {err}").expect("child: report");
    out.flush().expect("child: flush");
    std::process::exit(0);
}

/// A write past the process's file-size limit (EFBIG, which SQLite reports as a plain "disk
/// I/O error") is `DiskFull`, naming the file and the limit; the file stays intact with every
/// committed row.
#[test]
fn a_write_past_the_file_size_limit_is_disk_full_and_leaves_the_file_intact() {
    if let Some(db) = std::env::var_os(FSIZE_CHILD_ENV) {
        child_writes_until_the_limit(&PathBuf::from(db));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    migrated(&path, FileKind::Inbound);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_write_past_the_file_size_limit_is_disk_full_and_leaves_the_file_intact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("the child never reported ({}): {stdout}", out.status));
    let mut parts = report.splitn(3, ' ');
    let committed: i64 = parts.next().unwrap().parse().unwrap();
    let kind = parts.next().unwrap();
    let message = parts.next().unwrap_or_default();
    assert_eq!(kind, "DiskFull", "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("RLIMIT_FSIZE"), "{message}");
    assert!(committed > 0, "some rows fit under the limit");

    assert!(
        !journal_of(&path).exists(),
        "the failed write was rolled back"
    );
    let mut c = raw(&path);
    assert_eq!(count(&mut c, "messages_in"), committed);
    assert_eq!(
        text_values(
            &mut c,
            "SELECT integrity_check AS v FROM pragma_integrity_check"
        ),
        vec![Some("ok".to_string())]
    );
}
