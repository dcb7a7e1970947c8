//! Every host operation of docs/format.md §6, on real files.

use sessionbus_schema::{Clock, DbError, Seq, Timestamp};
use sessionbus_store::*;
use sessionbus_testkit::{message, reply, TempSession};

fn ids(v: &[MessageIn]) -> Vec<&str> {
    v.iter().map(|m| m.id.as_str()).collect()
}

#[test]
fn provision_creates_both_files_in_the_split_layout_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::in_data_dir(dir.path(), "group-1", "sess-1").unwrap();
    assert_eq!(paths.layout, Layout::Split);
    let p = provision(&paths, None, &SystemClock).unwrap();
    assert!(p.inbound.created && p.outbound.as_ref().is_some_and(|o| o.created));
    assert!(paths.inbound.is_file() && paths.outbound.is_file());
    assert!(paths.outbox.is_dir() && paths.inbox.is_dir());
    assert_eq!(paths.outbound.parent(), Some(paths.container_dir.as_path()));
    assert_ne!(paths.container_dir, paths.dir);
    // The host's folder is the host's alone, so the host takes it for the split layout.
    assert_eq!(SessionPaths::for_host(&paths.dir).layout, Layout::Split);
    let again = provision(&paths, None, &SystemClock).unwrap();
    assert!(!again.inbound.changed());
    assert!(
        again.outbound.is_none(),
        "an existing area is the container's: untouched"
    );
}

#[test]
fn provision_refuses_a_single_layout_folder() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("s");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(legacy.join("outbound.db"), b"").unwrap();
    let err = provision(&SessionPaths::new(&legacy), None, &SystemClock).unwrap_err();
    assert!(err.to_string().contains("migrate"), "{err}");
    let err = provision(&SessionPaths::single(&legacy), None, &SystemClock).unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err}");
}

#[test]
fn session_ids_cannot_escape_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    for (g, s) in [("..", "x"), ("g", "../x"), ("g/h", "x"), ("g", "a\0b")] {
        let err = SessionPaths::in_data_dir(dir.path(), g, s).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidId { .. }),
            "{g:?}/{s:?}: {err}"
        );
    }
}

#[test]
fn write_assigns_even_increasing_seqs_and_defaults() {
    let s = TempSession::new();
    let host = s.host();
    let w = host
        .inbound()
        .write_messages(&[message("a", "1").build(), message("b", "2").build()])
        .unwrap();
    assert_eq!(
        w.iter().map(|w| w.seq).collect::<Vec<_>>(),
        vec![Seq::new(2).unwrap(), Seq::new(4).unwrap()]
    );
    assert!(w.iter().all(|w| w.created));
    let m = host.inbound().message("a").unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Pending);
    assert_eq!(m.series_id.as_deref(), Some("a"));
    assert!(m.trigger && !m.on_wake);
    assert_eq!(m.tries, 0);
    assert_eq!(m.timestamp.instant(), Some(s.clock.now()));
    // JavaScript ISO format for messages_in.timestamp, as upstream writes it.
    assert!(m.timestamp.as_str().ends_with('Z') && m.timestamp.as_str().contains('T'));
}

#[test]
fn content_must_be_json_and_nothing_is_written_otherwise() {
    let s = TempSession::new();
    let host = s.host();
    let bad = message("bad", "x").content("{not json").build();
    let err = host
        .inbound()
        .write_messages(&[message("good", "x").build(), bad])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidContent { ref id, .. } if id == "bad"),
        "{err}"
    );
    assert!(host.inbound().message("good").unwrap().is_none());
    let huge = message("huge", "x")
        .content(&format!("\"{}\"", "a".repeat(validate::MAX_CONTENT_BYTES)))
        .build();
    assert!(matches!(
        host.inbound().write_message(&huge),
        Err(StoreError::ContentTooLarge { .. })
    ));
}

#[test]
fn ids_with_path_tricks_are_refused() {
    let s = TempSession::new();
    for id in ["../etc", "a/b", "x\0y", "ctl\u{7}"] {
        let err = s
            .host()
            .inbound()
            .write_message(&message(id, "x").build())
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidId { .. }), "{id:?}: {err}");
        assert!(
            err.to_string().contains("inbound.db"),
            "error names the file: {err}"
        );
    }
}

#[test]
fn the_sweep_view_reads_in_one_open_what_the_separate_reads_return() {
    let s = TempSession::new();
    let h = s.host();
    let all = SweepViewParts::core().with_last_activity().with_due();
    let empty = h.inbound().sweep_view(all).unwrap();
    assert!(empty.pending.is_empty() && empty.claims.is_empty() && !empty.open_series);
    assert_eq!((empty.due, empty.last_activity), (Some(0), None));
    let later = s.clock.now().plus_millis(60_000);
    h.inbound()
        .write_messages(&[
            message("now", "x").build(),
            message("later", "x").after(later).build(),
        ])
        .unwrap();
    h.inbound()
        .record_claims(&[Claim {
            message_id: "now".into(),
            claimed_at: TimeText(s.clock.now().to_iso()),
        }])
        .unwrap();
    let view = h.inbound().sweep_view(all).unwrap();
    assert_eq!(view.pending, h.inbound().pending_ids().unwrap());
    assert_eq!(view.claims, h.inbound().claim_records().unwrap());
    assert_eq!(view.claims.len(), 1);
    assert_eq!(view.due, Some(h.inbound().count_due().unwrap()));
    assert_eq!(view.due, Some(1));
    assert_eq!(view.last_activity, h.inbound().last_activity().unwrap());
    assert!(view.last_activity.is_some());
    assert!(!view.open_series);
    // The optional parts are read only when asked for.
    let core = h.inbound().sweep_view(SweepViewParts::core()).unwrap();
    assert_eq!((core.due, core.last_activity), (None, None));
    assert_eq!((core.pending, core.claims), (view.pending, view.claims));
}

#[test]
fn count_due_counts_pending_triggering_due_rows_only() {
    let s = TempSession::new();
    let h = s.host();
    let later = s.clock.now().plus_millis(60_000);
    h.inbound()
        .write_messages(&[
            message("now", "x").build(),
            message("ctx", "x").context().build(),
            message("later", "x").after(later).build(),
        ])
        .unwrap();
    assert_eq!(h.inbound().count_due().unwrap(), 1);
    s.clock.advance_secs(61);
    assert_eq!(h.inbound().count_due().unwrap(), 2);
}

#[test]
fn destinations_are_replaced_wholesale_and_routing_upserted() {
    let s = TempSession::new();
    let h = s.host();
    let d = |name: &str| Destination {
        name: name.into(),
        display_name: None,
        kind: DestinationType::Channel,
        channel_type: Some("slack".into()),
        platform_id: Some(format!("C-{name}")),
        agent_group_id: None,
    };
    h.inbound().replace_destinations(&[d("a"), d("b")]).unwrap();
    h.inbound().replace_destinations(&[d("c")]).unwrap();
    let c = s.container();
    let names: Vec<String> = c
        .inbound()
        .destinations()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["c"]);
    assert_eq!(c.inbound().routing().unwrap(), Routing::default());
    let r = Routing {
        channel_type: Some("slack".into()),
        platform_id: Some("C1".into()),
        thread_id: None,
    };
    h.inbound().set_routing(&r).unwrap();
    h.inbound().set_routing(&r).unwrap();
    assert_eq!(c.inbound().routing().unwrap(), r);
}

#[test]
fn sync_acks_marks_completed_and_failed_and_leaves_claims() {
    let s = TempSession::new();
    let (h, c) = (s.host(), s.container());
    h.inbound()
        .write_messages(&[
            message("ok", "x").build(),
            message("bad", "x").build(),
            message("busy", "x").build(),
        ])
        .unwrap();
    c.outbound()
        .ack(&["ok".into()], &AckStatus::Completed)
        .unwrap();
    c.outbound()
        .ack(&["bad".into()], &AckStatus::Failed)
        .unwrap();
    c.outbound()
        .ack(&["busy".into()], &AckStatus::Processing)
        .unwrap();
    let r = h.sync_acks(&|_| None).unwrap();
    assert_eq!(r.completed, vec!["ok"]);
    assert_eq!(r.still_pending, 1);
    assert_eq!(r.failed, vec!["bad"]);
    assert_eq!(
        h.inbound().message("ok").unwrap().unwrap().status,
        MessageStatus::Completed
    );
    assert_eq!(
        h.inbound().message("bad").unwrap().unwrap().status,
        MessageStatus::Failed
    );
    assert_eq!(
        h.inbound().message("busy").unwrap().unwrap().status,
        MessageStatus::Pending
    );
    // Idempotent: nothing left to sync; the claimed message is still pending.
    assert_eq!(
        h.sync_acks(&|_| None).unwrap(),
        SyncReport {
            still_pending: 1,
            ..SyncReport::default()
        }
    );
    let claims = h.outbound().claims().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].message_id, "busy");
    assert!(claims[0].claimed_at.instant().is_some());
}

/// Issue: a `failed` run ended its recurring series (the older host continues it).
#[test]
fn a_failed_run_of_a_recurring_task_continues_its_series() {
    let s = TempSession::new();
    let (h, c) = (s.host(), s.container());
    h.inbound()
        .write_message(&message("t1", "daily").recurring("0 9 * * *").build())
        .unwrap();
    c.outbound()
        .ack(&["t1".into()], &AckStatus::Failed)
        .unwrap();
    let next_at = s.clock.now().plus_millis(86_400_000);
    let r = h
        .sync_acks(&|_| {
            Some(NextOccurrence {
                id: "t2".into(),
                process_after: next_at,
            })
        })
        .unwrap();
    assert_eq!(r.failed, ["t1"]);
    assert_eq!(r.recurrences.len(), 1);
    let done = h.inbound().message("t1").unwrap().unwrap();
    assert_eq!(
        (done.status, done.recurrence),
        (MessageStatus::Failed, None)
    );
    let next = h.inbound().message("t2").unwrap().unwrap();
    assert_eq!(next.status, MessageStatus::Pending);
}

/// Issue: a completed row that still carries a recurrence (the older host died between
/// inserting the next occurrence and clearing the recurrence, or completed it without
/// fanning out) was never continued. It is continued exactly once: fanned out when no later
/// row of its series exists, else only cleared.
#[test]
fn a_finished_row_still_carrying_a_recurrence_is_continued_exactly_once() {
    let s = TempSession::new();
    let h = s.host();
    // Left by an older host: completed with its recurrence, no next occurrence.
    h.inbound()
        .write_message(&message("a1", "daily").recurring("0 9 * * *").build())
        .unwrap();
    h.inbound()
        .set_status("a1", &MessageStatus::Completed)
        .unwrap();
    // Left by an older host that died between its two statements: the next one exists.
    h.inbound()
        .write_message(&message("b1", "weekly").recurring("0 9 * * 1").build())
        .unwrap();
    h.inbound()
        .set_status("b1", &MessageStatus::Completed)
        .unwrap();
    let mut b2 = message("b2", "weekly").recurring("0 9 * * 1").build();
    b2.series_id = Some("b1".into());
    h.inbound().write_message(&b2).unwrap();
    let asked = std::cell::RefCell::new(Vec::new());
    let next = |m: &MessageIn| {
        asked.borrow_mut().push(m.id.clone());
        Some(NextOccurrence {
            id: format!("{}-next", m.id),
            process_after: s.clock.now().plus_millis(60_000),
        })
    };
    let r = h.sync_acks(&next).unwrap();
    assert_eq!(
        *asked.borrow(),
        ["a1"],
        "b1's next occurrence exists already"
    );
    assert_eq!(r.recurrences.len(), 1);
    assert!(h.inbound().message("a1-next").unwrap().is_some());
    assert!(h.inbound().message("b1-next").unwrap().is_none());
    for id in ["a1", "b1"] {
        assert_eq!(
            h.inbound().message(id).unwrap().unwrap().recurrence,
            None,
            "{id}"
        );
    }
    // Exactly once: the next sync has nothing to continue.
    let again = h.sync_acks(&next).unwrap();
    assert!(again.recurrences.is_empty());
    assert_eq!(asked.borrow().len(), 1);
}

#[test]
fn recurring_task_fans_out_atomically_with_the_sync() {
    let s = TempSession::new();
    let (h, c) = (s.host(), s.container());
    h.inbound()
        .write_message(&message("t1", "daily").recurring("0 9 * * *").build())
        .unwrap();
    c.outbound()
        .ack(&["t1".into()], &AckStatus::Completed)
        .unwrap();
    let next_at = s.clock.now().plus_millis(86_400_000);
    let r = h
        .sync_acks(&|m| {
            assert_eq!(m.id, "t1");
            Some(NextOccurrence {
                id: "t2".into(),
                process_after: next_at,
            })
        })
        .unwrap();
    assert_eq!(r.recurrences.len(), 1);
    let (done, next) = (
        h.inbound().message("t1").unwrap().unwrap(),
        h.inbound().message("t2").unwrap().unwrap(),
    );
    assert_eq!(done.recurrence, None);
    assert_eq!(next.recurrence.as_deref(), Some("0 9 * * *"));
    assert_eq!(next.series_id.as_deref(), Some("t1"));
    assert_eq!(next.status, MessageStatus::Pending);
    assert_eq!(next.process_after.unwrap().instant(), Some(next_at));
    assert!(next.seq > done.seq);
    // The explicit entry point refuses a row that is not a completed recurring task.
    let again = h
        .inbound()
        .schedule_next_occurrence(
            "t1",
            &NextOccurrence {
                id: "t3".into(),
                process_after: next_at,
            },
        )
        .unwrap();
    assert_eq!(again, None);
}

#[test]
fn retries_bump_only_pending_rows_and_failures_stick() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_messages(&[message("a", "x").build(), message("b", "x").build()])
        .unwrap();
    let later = s.clock.now().plus_millis(5_000);
    let n = h
        .inbound()
        .apply_retries(&[
            RetryUpdate::Retry {
                id: "a".into(),
                tries: 1,
                process_after: later,
            },
            RetryUpdate::Fail { id: "b".into() },
        ])
        .unwrap();
    assert_eq!(n, 2);
    let a = h.inbound().message("a").unwrap().unwrap();
    assert_eq!(a.tries, 1);
    assert_eq!(a.process_after.unwrap().instant(), Some(later));
    assert_eq!(
        h.inbound().message("b").unwrap().unwrap().status,
        MessageStatus::Failed
    );
    // A failed row is not retried back to life.
    let n = h
        .inbound()
        .apply_retries(&[RetryUpdate::Retry {
            id: "b".into(),
            tries: 2,
            process_after: later,
        }])
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn due_outbound_merges_host_replies_and_records_delivery_once() {
    let s = TempSession::new();
    let (h, c) = (s.host(), s.container());
    h.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();
    let r1 = c.outbound().write(&reply("r1", "one")).unwrap();
    let denial = h
        .inbound()
        .write_host_reply(&NewHostReply {
            id: "deny-1".into(),
            in_reply_to: Some("m0".into()),
            address: sessionbus_testkit::chat_address(),
            content: r#"{"text":"Permission denied: /clear requires admin access."}"#.into(),
        })
        .unwrap();
    let r2 = c.outbound().write(&reply("r2", "two")).unwrap();
    assert_eq!(denial.get() % 2, 0);
    assert!(r1 < denial && denial < r2, "{r1} {denial} {r2}");
    let due = h.due_outbound(10).unwrap();
    let order: Vec<(&str, OutboundSource)> = due
        .iter()
        .map(|d| (d.message.id.as_str(), d.source))
        .collect();
    assert_eq!(
        order,
        vec![
            ("r1", OutboundSource::Container),
            ("deny-1", OutboundSource::Host),
            ("r2", OutboundSource::Container)
        ]
    );
    for d in &due {
        assert_eq!(
            h.inbound().start_delivery_attempt(&d.message.id).unwrap(),
            1
        );
        let first = h
            .inbound()
            .record_delivery(
                &d.message.id,
                &DeliveryOutcome::Delivered {
                    platform_message_id: Some(format!("P-{}", d.message.id)),
                },
            )
            .unwrap();
        assert!(first);
        assert!(!h
            .inbound()
            .record_delivery(&d.message.id, &DeliveryOutcome::Failed)
            .unwrap());
    }
    assert!(h.due_outbound(10).unwrap().is_empty());
    // The container finds the platform ids by seq, both parities.
    let t = c.lookup_seq(r1).unwrap().unwrap();
    assert_eq!(t.platform_message_id, "P-r1");
    let t = c.lookup_seq(denial).unwrap().unwrap();
    assert_eq!(
        (t.id.as_str(), t.platform_message_id.as_str()),
        ("deny-1", "P-deny-1")
    );
    // A row written after everything was settled is still found.
    c.outbound().write(&reply("r3", "three")).unwrap();
    let due = h.due_outbound(10).unwrap();
    assert_eq!(
        due.iter()
            .map(|d| d.message.id.as_str())
            .collect::<Vec<_>>(),
        vec!["r3"]
    );
}

#[test]
fn same_day_iso_deliver_after_earlier_today_is_delivered() {
    // deliver_after in ISO, earlier the same day than now: as raw text it sorts after
    // SQLite's "YYYY-MM-DD HH:MM:SS" and upstream never delivered it. Write it the way the
    // older container did, through a plain connection.
    let s = TempSession::new();
    s.clock
        .set(Timestamp::parse("2026-04-21 12:00:00").unwrap());
    s.container().outbound().write(&reply("seed", "x")).unwrap();
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
        s.paths.outbound.to_str().unwrap(),
    )
    .unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO messages_out (id, seq, timestamp, deliver_after, kind, content) \
             VALUES ('iso', 101, '2026-04-21 08:00:00', '2026-04-21T08:00:00.000Z', 'chat', '{}'), \
                    ('future', 103, '2026-04-21 08:00:00', '2026-04-21T18:00:00.000Z', 'chat', '{}')",
        ),
        &mut conn,
    )
    .unwrap();
    drop(conn);
    let due: Vec<String> = s
        .host()
        .due_outbound(10)
        .unwrap()
        .into_iter()
        .map(|d| d.message.id)
        .collect();
    assert_eq!(due, vec!["seed", "iso"]);
}

#[test]
fn delivery_attempts_survive_a_host_restart() {
    let s = TempSession::new();
    s.container().outbound().write(&reply("r1", "x")).unwrap();
    let first_host = s.host();
    assert_eq!(
        first_host.inbound().start_delivery_attempt("r1").unwrap(),
        1
    );
    first_host
        .inbound()
        .note_delivery_error("r1", "platform timeout")
        .unwrap();
    drop(first_host);
    // A new host (a restart): the attempt is still counted, the row still due.
    let host = s.host();
    let due = host.due_outbound(10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(host.inbound().start_delivery_attempt("r1").unwrap(), 2);
}

#[test]
fn host_reply_is_idempotent_by_id() {
    let s = TempSession::new();
    let r = NewHostReply {
        id: "deny".into(),
        in_reply_to: None,
        address: Address::default(),
        content: "{}".into(),
    };
    let a = s.host().inbound().write_host_reply(&r).unwrap();
    let b = s.host().inbound().write_host_reply(&r).unwrap();
    assert_eq!(a, b);
    assert_eq!(s.host().due_outbound(10).unwrap().len(), 1);
}

#[test]
fn host_write_on_missing_folder_is_a_clear_not_found() {
    let h = HostSession::open("/nonexistent/sessionbus/x");
    let err = h
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap_err();
    assert!(
        matches!(err.as_db(), Some(DbError::NotFound { .. })),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("/nonexistent/sessionbus/x/inbound.db"));
    assert!(!std::path::Path::new("/nonexistent/sessionbus").exists());
}

#[test]
fn pending_lists_newest_first() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[message("a", "1").build(), message("b", "2").build()])
        .unwrap();
    assert_eq!(ids(&s.host().inbound().pending().unwrap()), vec!["b", "a"]);
}

#[test]
fn a_pending_system_answer_alone_does_not_count_as_due() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("ans", "x").answer_to("q1").build())
        .unwrap();
    assert_eq!(h.inbound().count_due().unwrap(), 0);
    h.inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    assert_eq!(h.inbound().count_due().unwrap(), 1);
}

/// A row an older implementation wrote before seqs existed (seq NULL) has no seq to return, so
/// writing the same message again is refused as a taken id instead of inventing a seq.
#[test]
fn a_retry_of_a_legacy_row_without_a_seq_is_a_taken_id() {
    let s = TempSession::new();
    let msg = message("legacy", "hi").build();
    s.host().inbound().write_message(&msg).unwrap();
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
        s.paths.inbound.to_str().unwrap(),
    )
    .unwrap();
    // The parity triggers refuse such a row now: lift them for the update, then put the same
    // definitions back, so the file's schema is what the library made.
    #[derive(diesel::QueryableByName)]
    struct Sql {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        sql: String,
    }
    let triggers: Vec<Sql> = diesel::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages_in'",
        ),
        &mut conn,
    )
    .unwrap();
    assert!(!triggers.is_empty());
    let mut script = String::from("BEGIN;");
    for t in &triggers {
        script += &format!("DROP TRIGGER \"{}\";", t.name);
    }
    script += "UPDATE messages_in SET seq = NULL WHERE id = 'legacy';";
    for t in &triggers {
        script += &format!("{};", t.sql);
    }
    script += "COMMIT;";
    diesel::connection::SimpleConnection::batch_execute(&mut conn, &script).unwrap();
    drop(conn);
    match s.host().inbound().write_message(&msg) {
        Err(StoreError::DuplicateId {
            id, existing_seq, ..
        }) => assert_eq!((id.as_str(), existing_seq), ("legacy", None)),
        other => panic!("expected DuplicateId, got {other:?}"),
    }
    // A new message still gets the next even seq.
    let w = s
        .host()
        .inbound()
        .write_message(&message("new", "x").build())
        .unwrap();
    assert_eq!(w.seq.owner(), sessionbus_schema::SeqOwner::Host);
}
