use sessionbus_store::{AckStatus, NewOutbound};
use sessionbus_testkit::{message, MemSession, TempSession};

fn round_trip(host: sessionbus_store::HostSession, container: sessionbus_store::ContainerSession) {
    host.inbound()
        .write_message(&message("m1", "hello").build())
        .unwrap();
    let batch = container.poll_after_start(10).unwrap();
    assert_eq!(batch.ids(), vec!["m1".to_string()]);
    let seqs = container
        .outbound()
        .commit(
            &batch.ids(),
            &AckStatus::Completed,
            &[NewOutbound::reply_to(
                "r1",
                &batch.messages[0],
                "echo: hello",
            )],
        )
        .unwrap();
    assert_eq!(seqs[0].get() % 2, 1);
    let due = host.due_outbound(10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message.id, "r1");
    let report = host.sync_acks(&|_| None).unwrap();
    assert_eq!(report.completed, vec!["m1".to_string()]);
    assert!(container.poll(10).unwrap().is_empty());
}

#[test]
fn mem_session_is_a_working_pair() {
    let s = MemSession::new();
    round_trip(s.host(), s.container());
}

#[test]
fn mem_sessions_are_isolated() {
    let a = MemSession::new();
    let b = MemSession::new();
    a.host()
        .inbound()
        .write_message(&message("m1", "x").build())
        .unwrap();
    assert!(b.container().poll_after_start(10).unwrap().is_empty());
}

#[test]
fn mem_session_readers_are_read_only() {
    let s = MemSession::new();
    let err = s
        .container()
        .inbound()
        .with_raw_connection(|c| {
            diesel::RunQueryDsl::execute(diesel::sql_query("DELETE FROM messages_in"), c)
        })
        .unwrap_err();
    assert!(
        matches!(
            err.as_db(),
            Some(sessionbus_schema::DbError::ReadOnly { .. })
        ),
        "{err}"
    );
}

#[test]
fn temp_session_is_a_working_pair_on_real_files() {
    let s = TempSession::new();
    assert!(s.paths.inbound.is_file() && s.paths.outbound.is_file());
    assert!(s.paths.outbox.is_dir());
    round_trip(s.host(), s.container());
}

#[test]
fn temp_sessions_are_fresh_copies() {
    let a = TempSession::new();
    a.host()
        .inbound()
        .write_message(&message("m1", "x").build())
        .unwrap();
    let b = TempSession::new();
    assert_eq!(b.host().inbound().count_due().unwrap(), 0);
}

#[test]
fn manual_clock_moves_only_when_told() {
    use sessionbus_schema::Clock;
    let s = TempSession::new();
    let t0 = s.clock.now();
    assert_eq!(s.clock.now(), t0);
    s.clock.advance_secs(90);
    assert_eq!(s.clock.now().millis_since(t0), 90_000);
}
