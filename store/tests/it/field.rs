//! Failures the older implementation's users hit in production (issue "hardening from the
//! field"), reproduced with real files and processes.

use sessionbus_schema::DbError;
use sessionbus_store::*;
use sessionbus_testkit::{message, TempSession};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// Item 3: a `failed` ack makes the messages_in row `failed`, not `completed`.
#[test]
fn failed_ack_stays_failed() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    s.container()
        .outbound()
        .ack(&["m".into()], &AckStatus::Failed)
        .unwrap();
    let r = s.host().sync_acks(&|_| None).unwrap();
    assert_eq!(r.failed, vec!["m"]);
    assert!(r.completed.is_empty());
    assert_eq!(
        s.host().inbound().message("m").unwrap().unwrap().status,
        MessageStatus::Failed
    );
}

/// Item 4: chat platforms retry and reuse ids.
#[test]
fn reused_ids_are_idempotent_or_a_typed_duplicate_never_a_drop() {
    let s = TempSession::new();
    let h = s.host();
    let first = h
        .inbound()
        .write_message(&message("p-1", "hello").build())
        .unwrap();
    assert!(first.created);
    // The platform retries the same message: same seq back, nothing new.
    let retry = h
        .inbound()
        .write_message(
            &message("p-1", "x")
                .content(r#"{ "text" : "hello" }"#)
                .build(),
        )
        .unwrap();
    assert_eq!(
        retry,
        Written {
            seq: first.seq,
            created: false
        }
    );
    // The platform's counter reset and reuses the id for other content: a typed error that
    // carries the existing row's status, and the caller's loop goes on.
    s.container()
        .outbound()
        .ack(&["p-1".into()], &AckStatus::Completed)
        .unwrap();
    h.sync_acks(&|_| None).unwrap();
    let err = h
        .inbound()
        .write_message(&message("p-1", "different").build())
        .unwrap_err();
    match &err {
        StoreError::DuplicateId {
            id,
            existing_seq,
            existing_status,
            ..
        } => {
            assert_eq!(id, "p-1");
            assert_eq!(*existing_seq, Some(first.seq));
            assert_eq!(existing_status, "completed");
        }
        other => panic!("expected DuplicateId, got {other}"),
    }
    assert!(err.to_string().contains("p-1"));
    // A batch with a conflicting id writes nothing at all.
    let err = h
        .inbound()
        .write_messages(&[
            message("new-1", "a").build(),
            message("p-1", "other").build(),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateId { .. }));
    assert!(h.inbound().message("new-1").unwrap().is_none());
    assert_eq!(
        h.inbound().message("p-1").unwrap().unwrap().content,
        r#"{"text":"hello"}"#
    );
}

/// Item 6: a dead container's tool state must not widen the next one's stuck tolerance.
#[test]
fn container_start_resets_container_state() {
    let s = TempSession::new();
    s.container()
        .outbound()
        .set_tool_in_flight("Bash", Some(7_200_000))
        .unwrap();
    s.container().start().unwrap();
    let st = s.host().outbound().container_state().unwrap().unwrap();
    assert_eq!(st.current_tool, None);
    assert_eq!(st.tool_declared_timeout_ms, None);
}

/// Item 7: no long-lived view of the other side's file. Destinations are rewritten between
/// two lookups through the same container session and reader.
#[test]
fn destinations_rewritten_mid_session_are_seen_at_once() {
    let s = TempSession::new();
    let d = |name: &str| Destination {
        name: name.into(),
        display_name: None,
        kind: DestinationType::Channel,
        channel_type: Some("slack".into()),
        platform_id: Some("C1".into()),
        agent_group_id: None,
    };
    let h = s.host();
    h.inbound().replace_destinations(&[d("allowed")]).unwrap();
    let c = s.container();
    let reader = c.inbound();
    assert!(reader.destination("allowed").unwrap().is_some());
    h.inbound().replace_destinations(&[d("other")]).unwrap();
    assert!(
        reader.destination("allowed").unwrap().is_none(),
        "permission revoked at once"
    );
    assert!(reader.destination("other").unwrap().is_some());
    // The same for routing, seq lookups and the max seq.
    assert_eq!(reader.max_seq().unwrap(), None);
    let w = h
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    assert_eq!(reader.max_seq().unwrap(), Some(w.seq));
    assert!(c.lookup_seq(w.seq).unwrap().is_some());
}

const NOBODY: u32 = 65534;

/// Runs the container's start-up in a child process as `uid` (`sessionbus-test-child
/// container-start`), which prints `CHILD-OK` or `CHILD-ERR <error>`.
fn child_container_start(dir: &std::path::Path, uid: u32) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    sessionbus_testkit::child::command()
        .arg("container-start")
        .arg(dir)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap()
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Item 8: the host runs as root, the container as an unprivileged user. Provisioning with
/// the container's uid/gid lets the container write outbound.db; inbound.db stays the host's
/// and readable.
#[test]
fn provisioned_ownership_lets_an_unprivileged_container_start() {
    assert!(
        running_as_root(),
        "this test needs root to switch users (CI runs as root)"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = SessionPaths::new(root.path().join("s"));
    provision(
        &paths,
        Some(Ownership {
            uid: NOBODY,
            gid: NOBODY,
        }),
        &SystemClock,
    )
    .unwrap();
    // The host's folder stays the host's; the container owns its area and what is in it.
    let dir = std::fs::metadata(&paths.dir).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o755));
    assert_eq!(
        std::fs::metadata(&paths.container_dir).unwrap().uid(),
        NOBODY
    );
    assert_eq!(std::fs::metadata(&paths.outbound).unwrap().uid(), NOBODY);
    assert_eq!(std::fs::metadata(&paths.outbox).unwrap().uid(), NOBODY);
    let inbound = std::fs::metadata(&paths.inbound).unwrap();
    assert_eq!(inbound.uid(), 0);
    assert_eq!(inbound.mode() & 0o777, 0o644);
    HostSession::open(&paths.dir)
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    let out = child_container_start(&paths.dir, NOBODY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHILD-OK"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let due = HostSession::open(&paths.dir).due_outbound(10).unwrap();
    assert_eq!(due[0].message.id, "from-child");
}

/// Item 8: a session folder created by root without the container's uid leaves the container
/// unable to write outbound.db: it fails at start-up naming the file, its owner and mode, and
/// its own uid.
#[test]
fn root_owned_session_fails_container_start_up_with_a_clear_error() {
    assert!(
        running_as_root(),
        "this test needs root to switch users (CI runs as root)"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = SessionPaths::new(root.path().join("s"));
    provision(&paths, None, &SystemClock).unwrap();
    let out = child_container_start(&paths.dir, NOBODY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-ERR").map(|(_, e)| e))
        .unwrap_or_else(|| {
            panic!(
                "child should fail: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(line.contains("outbound.db"), "{line}");
    assert!(line.contains("uid 65534"), "{line}");
    assert!(line.contains("owner uid 0"), "{line}");
    assert!(line.contains("mode 644"), "{line}");
}

/// Item 8 on the container's own side: check_writable reports the file, owner, mode and uid.
#[test]
fn check_writable_passes_for_a_writable_file_and_names_a_missing_one() {
    let s = TempSession::new();
    check_writable(&s.paths.outbound).unwrap();
    let err = check_writable(&s.paths.dir.join("nope.db")).unwrap_err();
    assert!(
        matches!(err.as_db(), Some(DbError::NotFound { .. })),
        "{err}"
    );
}

/// Item 10: a crash between handing a message to the chat platform and recording it. The
/// documented choice is at-least-once: the attempt was counted before the hand-off, the row
/// stays due after a restart and is handed over again with `attempts` telling the caller it
/// may be a repeat (so it can pass the id as an idempotency key to the platform).
#[test]
fn crash_between_hand_off_and_record_redelivers_with_the_attempt_counted() {
    let s = TempSession::new();
    s.container()
        .outbound()
        .write(&NewOutbound::chat("r1", "answer"))
        .unwrap();
    let host = s.host();
    let due = host.due_outbound(10).unwrap();
    assert_eq!(due[0].attempts, 0);
    host.inbound().start_delivery_attempt("r1").unwrap();
    // ... handed to the platform, then the host dies before record_delivery.
    drop(host);
    let host = s.host();
    let due = host.due_outbound(10).unwrap();
    assert_eq!(due.len(), 1, "not lost");
    assert_eq!(due[0].message.id, "r1");
    assert_eq!(due[0].attempts, 1, "the caller learns it may be a repeat");
    host.inbound()
        .record_delivery(
            "r1",
            &DeliveryOutcome::Delivered {
                platform_message_id: Some("P1".into()),
            },
        )
        .unwrap();
    assert!(host.due_outbound(10).unwrap().is_empty());
}
