//! Every container operation of docs/format.md §6, on real files.

use sessionbus_schema::{Clock, Seq};
use sessionbus_store::*;
use sessionbus_testkit::{message, reply, TempSession};

#[test]
fn start_clears_stale_claims_and_tool_state() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[message("a", "x").build(), message("b", "x").build()])
        .unwrap();
    let old = s.container();
    old.outbound()
        .ack(&["a".into()], &AckStatus::Processing)
        .unwrap();
    old.outbound()
        .ack(&["b".into()], &AckStatus::Completed)
        .unwrap();
    old.outbound()
        .set_tool_in_flight("Bash", Some(3_600_000))
        .unwrap();
    drop(old);
    let c = s.container();
    assert_eq!(c.start().unwrap(), 1);
    let h = s.host();
    assert!(h.outbound().claims().unwrap().is_empty());
    let st = h.outbound().container_state().unwrap().unwrap();
    assert_eq!((st.current_tool, st.tool_declared_timeout_ms), (None, None));
    // The completed ack survives the restart.
    assert_eq!(
        c.outbound().acks(&["b".into()]).unwrap()[0].status,
        AckStatus::Completed
    );
}

#[test]
fn poll_returns_newest_n_oldest_first_skipping_acked_system_and_future() {
    let s = TempSession::new();
    let h = s.host();
    let later = s.clock.now().plus_millis(30_000);
    h.inbound()
        .write_messages(&[
            message("m1", "1").build(),
            message("m2", "2").build(),
            message("sys", "x").answer_to("q1").build(),
            message("m3", "3").build(),
            message("future", "x").after(later).build(),
            message("m4", "4").build(),
        ])
        .unwrap();
    let c = s.container();
    c.outbound()
        .ack(&["m4".into()], &AckStatus::Processing)
        .unwrap();
    let b = c.poll_after_start(2).unwrap();
    assert_eq!(b.ids(), vec!["m2", "m3"]);
    let b = c.poll_after_start(10).unwrap();
    assert_eq!(b.ids(), vec!["m1", "m2", "m3"]);
    s.clock.advance_secs(31);
    assert_eq!(c.poll(10).unwrap().ids(), vec!["m1", "m2", "m3", "future"]);
}

#[test]
fn on_wake_rows_only_on_the_first_poll_and_context_does_not_wake() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[
            message("wake", "x").on_wake().build(),
            message("ctx", "x").context().build(),
        ])
        .unwrap();
    let c = s.container();
    let first = c.poll_after_start(10).unwrap();
    assert_eq!(first.ids(), vec!["wake", "ctx"]);
    let later = c.poll(10).unwrap();
    assert_eq!(later.ids(), vec!["ctx"]);
    assert!(
        !later.wakes(),
        "a batch of context rows alone does not wake the agent"
    );
    assert!(first.wakes());
}

#[test]
fn poll_limit_of_zero_is_a_clear_error() {
    let s = TempSession::new();
    assert!(matches!(
        s.container().poll_after_start(0),
        Err(StoreError::InvalidArgument { .. })
    ));
}

#[test]
fn replies_get_odd_seqs_above_both_files_and_commit_with_their_ack() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_messages(&[message("a", "x").build(), message("b", "x").build()])
        .unwrap();
    let c = s.container();
    let batch = c.poll_after_start(10).unwrap();
    let seqs = c
        .outbound()
        .commit(
            &batch.ids(),
            &AckStatus::Completed,
            &[
                NewOutbound::reply_to("ra", &batch.messages[0], "A"),
                NewOutbound::reply_to("rb", &batch.messages[1], "B"),
            ],
        )
        .unwrap();
    assert_eq!(seqs, vec![Seq::new(5).unwrap(), Seq::new(7).unwrap()]);
    let acks = c.outbound().acks(&batch.ids()).unwrap();
    assert!(acks.iter().all(|a| a.status == AckStatus::Completed));
    // The host writes more; the next reply still sorts after everything.
    h.inbound()
        .write_message(&message("c", "x").build())
        .unwrap();
    assert_eq!(
        h.inbound().message("c").unwrap().unwrap().seq,
        Some(Seq::new(6).unwrap())
    );
    assert_eq!(
        c.outbound().write(&reply("rc", "C")).unwrap(),
        Seq::new(9).unwrap()
    );
}

#[test]
fn invalid_reply_content_writes_neither_reply_nor_ack() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("a", "x").build())
        .unwrap();
    let c = s.container();
    let mut bad = reply("r", "x");
    bad.content = "nope".into();
    let err = c
        .outbound()
        .commit(&["a".into()], &AckStatus::Completed, &[bad])
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidContent { .. }), "{err}");
    assert!(c.outbound().acks(&["a".into()]).unwrap().is_empty());
    assert_eq!(c.poll_after_start(10).unwrap().ids(), vec!["a"]);
}

#[test]
fn lookups_by_seq_route_by_parity() {
    let s = TempSession::new();
    let w = s
        .host()
        .inbound()
        .write_message(&message("in-1", "x").build())
        .unwrap();
    let c = s.container();
    let r = c.outbound().write(&reply("out-1", "y")).unwrap();
    let t = c.lookup_seq(w.seq).unwrap().unwrap();
    assert_eq!((t.id.as_str(), t.source), ("in-1", OutboundSource::Host));
    assert_eq!(t.platform_message_id, "in-1");
    let t = c.lookup_seq(r).unwrap().unwrap();
    assert_eq!(
        (t.id.as_str(), t.source),
        ("out-1", OutboundSource::Container)
    );
    assert_eq!(
        t.platform_message_id, "out-1",
        "not delivered yet: the internal id"
    );
    s.host()
        .inbound()
        .record_delivery(
            "out-1",
            &DeliveryOutcome::Delivered {
                platform_message_id: Some("P9".into()),
            },
        )
        .unwrap();
    assert_eq!(c.lookup_seq(r).unwrap().unwrap().platform_message_id, "P9");
    assert!(c.lookup_seq(Seq::new(1000).unwrap()).unwrap().is_none());
    assert!(c.lookup_seq(Seq::new(1001).unwrap()).unwrap().is_none());
}

#[test]
fn destinations_resolve_by_name_and_absent_means_not_permitted() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .replace_destinations(&[Destination {
            name: "ops".into(),
            display_name: Some("Ops".into()),
            kind: DestinationType::Agent,
            channel_type: None,
            platform_id: None,
            agent_group_id: Some("g2".into()),
        }])
        .unwrap();
    let c = s.container();
    let d = c.inbound().destination("ops").unwrap().unwrap();
    assert_eq!(d.kind, DestinationType::Agent);
    assert!(c.inbound().destination("nope").unwrap().is_none());
}

#[test]
fn session_state_and_continuations() {
    let s = TempSession::new();
    let o = s.container();
    let o = o.outbound();
    assert_eq!(o.state_get("k").unwrap(), None);
    o.state_set("k", "v1").unwrap();
    o.state_set("k", "v2").unwrap();
    assert_eq!(o.state_get("k").unwrap().as_deref(), Some("v2"));
    assert!(o.state_delete("k").unwrap());
    assert!(!o.state_delete("k").unwrap());
    o.set_continuation("Claude", "c-1").unwrap();
    assert_eq!(
        o.state_get("continuation:claude").unwrap().as_deref(),
        Some("c-1")
    );
    assert_eq!(o.continuation("CLAUDE").unwrap().as_deref(), Some("c-1"));
}

#[test]
fn legacy_continuation_is_adopted_only_when_the_provider_has_none_and_always_deleted() {
    let s = TempSession::new();
    let c = s.container();
    let o = c.outbound();
    o.state_set(LEGACY_CONTINUATION_KEY, "legacy").unwrap();
    assert!(o.adopt_legacy_continuation("claude").unwrap());
    assert_eq!(o.continuation("claude").unwrap().as_deref(), Some("legacy"));
    assert_eq!(o.state_get(LEGACY_CONTINUATION_KEY).unwrap(), None);
    o.state_set(LEGACY_CONTINUATION_KEY, "older").unwrap();
    assert!(!o.adopt_legacy_continuation("claude").unwrap());
    assert_eq!(o.continuation("claude").unwrap().as_deref(), Some("legacy"));
    assert_eq!(o.state_get(LEGACY_CONTINUATION_KEY).unwrap(), None);
    assert!(!o.adopt_legacy_continuation("claude").unwrap());
}

#[test]
fn tool_in_flight_set_and_clear() {
    let s = TempSession::new();
    let c = s.container();
    c.outbound()
        .set_tool_in_flight("Bash", Some(600_000))
        .unwrap();
    let st = s.host().outbound().container_state().unwrap().unwrap();
    assert_eq!(st.current_tool.as_deref(), Some("Bash"));
    assert_eq!(st.tool_declared_timeout_ms, Some(600_000));
    assert_eq!(st.tool_started_at.unwrap().instant(), Some(s.clock.now()));
    c.outbound().set_tool_in_flight("Read", None).unwrap();
    assert_eq!(
        s.host()
            .outbound()
            .container_state()
            .unwrap()
            .unwrap()
            .tool_declared_timeout_ms,
        None
    );
    c.outbound().clear_tool_in_flight().unwrap();
    assert_eq!(
        s.host()
            .outbound()
            .container_state()
            .unwrap()
            .unwrap()
            .current_tool,
        None
    );
}

#[test]
fn question_answers_match_the_json_field_not_the_text() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[
            message("decoy", "x")
                .kind(MessageKind::System)
                .content(r#"{"text":"questionId q-7 mentioned","questionId":"q-70"}"#)
                .build(),
            message("ans", "x").answer_to("q-7").build(),
        ])
        .unwrap();
    let c = s.container();
    assert_eq!(c.find_answer("q-7").unwrap().unwrap().id, "ans");
    assert!(c.find_answer("q-1").unwrap().is_none());
    c.outbound()
        .ack(&["ans".into()], &AckStatus::Completed)
        .unwrap();
    assert!(
        c.find_answer("q-7").unwrap().is_none(),
        "an acked answer is taken"
    );
}

#[test]
fn unknown_kinds_and_statuses_from_a_newer_peer_read_fine() {
    let s = TempSession::new();
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
        s.paths.inbound.to_str().unwrap(),
    )
    .unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO messages_in (id, seq, kind, timestamp, status, content) \
             VALUES ('n1', 2, 'hologram', '2026-04-21T12:00:00.000Z', 'pending', '{}'), \
                    ('n2', 4, 'chat', '2026-04-21T12:00:00.000Z', 'quarantined', '{}')",
        ),
        &mut conn,
    )
    .unwrap();
    let h = s.host();
    assert_eq!(
        h.inbound().message("n1").unwrap().unwrap().kind,
        MessageKind::Other("hologram".into())
    );
    assert_eq!(
        h.inbound().message("n2").unwrap().unwrap().status,
        MessageStatus::Other("quarantined".into())
    );
    assert_eq!(
        s.container().poll_after_start(10).unwrap().ids(),
        vec!["n1"]
    );
}

#[test]
fn a_peer_writing_a_null_key_is_refused_by_the_file() {
    let s = TempSession::new();
    for (path, sql) in [
        (&s.paths.inbound, "INSERT INTO messages_in (id, seq, kind, timestamp, content) VALUES (NULL, 2, 'chat', 'x', '{}')"),
        (&s.paths.outbound, "INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES (NULL, 1, 'x', 'chat', '{}')"),
    ] {
        let mut conn =
            <diesel::SqliteConnection as diesel::Connection>::establish(path.to_str().unwrap()).unwrap();
        let err = diesel::RunQueryDsl::execute(diesel::sql_query(sql), &mut conn).unwrap_err();
        assert!(err.to_string().contains("must not be NULL"), "{err}");
    }
    // Polls keep working.
    assert!(s.container().poll_after_start(10).unwrap().is_empty());
}

/// The host schedules a retry with milliseconds (`process_after` like `12:00:00.500`); the
/// container's poll compares at that precision, so a retry due in 500 ms is neither taken a
/// second early (whole seconds rounded down) nor a second late (rounded up).
#[test]
fn a_retry_due_in_500_ms_is_polled_at_millisecond_precision() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("r", "x").build())
        .unwrap();
    let due = s.clock.now().plus_millis(500);
    assert_eq!(
        h.inbound()
            .apply_retries(&[RetryUpdate::Retry {
                id: "r".into(),
                tries: 1,
                process_after: due,
            }])
            .unwrap(),
        1
    );
    let stored = h.inbound().message("r").unwrap().unwrap().process_after;
    assert_eq!(stored.as_ref().and_then(TimeText::instant), Some(due));
    let c = s.container();
    s.clock.advance_ms(400);
    assert!(c.poll(10).unwrap().is_empty(), "taken 100 ms early");
    assert!(!TimeText(due.to_sqlite_millis()).is_due(s.clock.now()));
    s.clock.advance_ms(200);
    assert_eq!(c.poll(10).unwrap().ids(), vec!["r"]);
    assert!(TimeText(due.to_sqlite_millis()).is_due(s.clock.now()));
    // Exactly at the instant counts as due.
    assert!(TimeText(due.to_sqlite_millis()).is_due(due));
    assert!(!TimeText(due.to_sqlite_millis()).is_due(due.plus_millis(-1)));
}

#[test]
fn a_batch_claim_sets_the_busy_mark_and_the_last_commit_clears_it_with_the_tool_kept() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[message("a", "x").build(), message("b", "x").build()])
        .unwrap();
    let c = s.container();
    c.start().unwrap();
    assert_eq!(c.outbound().busy_since().unwrap(), None);
    let ids = vec!["a".to_string(), "b".to_string()];
    let claimed = c.outbound().claim_batch(&ids).unwrap();
    assert_eq!(
        c.outbound().busy_since().unwrap().and_then(|t| t.instant()),
        Some(claimed)
    );
    let claims = s.host().outbound().claims().unwrap();
    assert_eq!(claims.len(), 2);
    assert!(claims
        .iter()
        .all(|cl| cl.claimed_at.instant() == Some(claimed)));
    // The tool columns and the busy mark are written apart, without resetting each other.
    c.outbound().set_tool_in_flight("Bash", Some(1000)).unwrap();
    assert!(c.outbound().busy_since().unwrap().is_some());
    s.clock.advance_ms(5);
    c.outbound()
        .commit(&ids[..1], &AckStatus::Completed, &[])
        .unwrap();
    assert!(
        c.outbound().busy_since().unwrap().is_some(),
        "not the last part"
    );
    c.outbound()
        .commit_and_finish(&ids[1..], &AckStatus::Completed, &[])
        .unwrap();
    assert_eq!(c.outbound().busy_since().unwrap(), None);
    let st = s.host().outbound().container_state().unwrap().unwrap();
    assert_eq!(st.current_tool.as_deref(), Some("Bash"));
    // A restart clears both.
    c.outbound().claim_batch(&ids).unwrap();
    c.start().unwrap();
    assert_eq!(c.outbound().busy_since().unwrap(), None);
    let st = s.host().outbound().container_state().unwrap().unwrap();
    assert_eq!(st.current_tool, None);
}

#[test]
fn failure_notes_keep_the_claims_end_the_batch_and_stay_bounded() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("f", "x").build())
        .unwrap();
    let c = s.container();
    c.start().unwrap();
    let ids = vec!["f".to_string()];
    c.outbound().claim_batch(&ids).unwrap();
    c.outbound().set_tool_in_flight("Bash", None).unwrap();
    c.outbound().note_failure(&ids, &"x".repeat(5000)).unwrap();
    let notes = c.outbound().failure_notes(&ids).unwrap();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].reason.len() <= MAX_FAILURE_REASON_BYTES);
    assert_eq!(notes[0].at.instant(), Some(s.clock.now()));
    assert_eq!(c.outbound().busy_since().unwrap(), None);
    let st = s.host().outbound().container_state().unwrap().unwrap();
    assert_eq!(st.current_tool, None);
    // The claim is still there for the host.
    let claims = s.host().outbound().claims().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].message_id, "f");
    // A second failure of the same message replaces its note.
    c.outbound().note_failure(&ids, "again").unwrap();
    assert_eq!(c.outbound().failure_notes(&ids).unwrap()[0].reason, "again");
    // Only the newest notes are kept.
    let n = usize::try_from(MAX_FAILURE_NOTES).unwrap() + 5;
    let many: Vec<String> = (0..n).map(|i| format!("n{i:05}")).collect();
    for chunk in many.chunks(250) {
        s.clock.advance_ms(1);
        c.outbound().note_failure(chunk, "x").unwrap();
    }
    let kept = c.outbound().failure_notes(&many).unwrap();
    assert_eq!(kept.len(), usize::try_from(MAX_FAILURE_NOTES).unwrap());
    assert!(
        c.outbound().failure_notes(&ids).unwrap().is_empty(),
        "oldest dropped"
    );
}

/// A message that has failed before goes alone, oldest first: a poison message cannot take its
/// batch-mates down with it again, and they are answered.
#[test]
fn a_retried_message_is_polled_alone() {
    let s = TempSession::new();
    let h = s.host();
    for id in ["a", "poison", "b", "c"] {
        h.inbound().write_message(&message(id, id).build()).unwrap();
    }
    let now = s.clock.now();
    let retry = |id: &str| RetryUpdate::Retry {
        id: id.into(),
        tries: 1,
        process_after: now,
    };
    // "a" and "poison" shared a batch that failed; "b" and "c" are new.
    h.inbound()
        .apply_retries(&[retry("a"), retry("poison")])
        .unwrap();
    let c = s.container();
    let batch = c.poll(10).unwrap();
    assert_eq!(batch.ids(), ["a"], "the oldest retry alone");
    c.outbound()
        .ack(&batch.ids(), &AckStatus::Completed)
        .unwrap();
    assert_eq!(c.poll(10).unwrap().ids(), ["poison"]);
    c.outbound()
        .ack(&["poison".into()], &AckStatus::Failed)
        .unwrap();
    assert_eq!(
        c.poll(10).unwrap().ids(),
        ["b", "c"],
        "no retry left: a normal batch"
    );
}

/// When the newest rows are all context rows, the batch ends at the newest row that wakes the
/// agent instead of waking nothing and stranding it.
#[test]
fn context_rows_newer_than_a_message_do_not_strand_it() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("ask", "question").build())
        .unwrap();
    for i in 0..3 {
        h.inbound()
            .write_message(&message(&format!("ctx{i}"), "chatter").context().build())
            .unwrap();
    }
    let c = s.container();
    let batch = c.poll(2).unwrap();
    assert!(batch.wakes(), "{:?}", batch.ids());
    assert_eq!(
        batch.ids(),
        ["ask", "ctx0"],
        "the newest two ending at the question"
    );
    // With room for all, the newest rows as before.
    assert_eq!(c.poll(10).unwrap().ids(), ["ask", "ctx0", "ctx1", "ctx2"]);
    // Only context rows pending: a batch that wakes nothing, as before.
    c.outbound()
        .ack(&["ask".into()], &AckStatus::Completed)
        .unwrap();
    assert!(!c.poll(10).unwrap().wakes());
}
