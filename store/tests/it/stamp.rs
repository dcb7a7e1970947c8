//! The host's generation stamp for inbound.db (`sessionbus_store::stamp`): every host commit
//! leaves one stamp naming inbound.db's change counter; nothing else stamps; stamps of an
//! earlier file never outlive it.

use sessionbus_schema::SystemClock;
use sessionbus_store::stamp::{self, InboundStamp};
use sessionbus_store::{provision, AckStatus, NewOutbound};
use sessionbus_testkit::{message, TempSession};

fn counter(s: &TempSession) -> u32 {
    stamp::change_counter(&s.paths.inbound)
        .unwrap()
        .expect("an SQLite header")
}

#[test]
fn every_host_commit_leaves_one_stamp_with_the_files_change_counter() {
    let s = TempSession::new();
    assert!(stamp::stamps(s.dir()).unwrap().is_empty(), "a fresh folder");
    let host = s.host();
    for i in 0..5 {
        host.inbound()
            .write_message(&message(&format!("m{i}"), "hi").build())
            .unwrap();
        let all = stamp::stamps(s.dir()).unwrap();
        assert_eq!(all.len(), 1, "one stamp after write {i}: {all:?}");
        assert_eq!(all[0].change_counter, counter(&s), "write {i}");
        assert_eq!(stamp::newest_stamp(s.dir()).unwrap(), Some(all[0]));
    }
    // Other host writes into inbound.db stamp too (acks synced, delivery recorded, ...).
    let before = counter(&s);
    let c = s.container();
    c.start().unwrap();
    let batch = c.poll_after_start(10).unwrap();
    c.outbound()
        .commit(
            &batch.ids(),
            &AckStatus::Completed,
            &[NewOutbound::reply_to("r0", &batch.messages[0], "ok")],
        )
        .unwrap();
    host.sync_acks(&|_| None).unwrap();
    assert_ne!(counter(&s), before);
    let newest = stamp::newest_stamp(s.dir()).unwrap().unwrap();
    assert_eq!(newest.change_counter, counter(&s));
}

#[test]
fn container_reads_and_writes_do_not_stamp() {
    let s = TempSession::new();
    let c = s.container();
    c.start().unwrap();
    c.poll_after_start(10).unwrap();
    c.outbound().state_set("k", "v").unwrap();
    assert!(
        !stamp::stamp_dir(s.dir()).exists(),
        "the container never writes the host's stamp"
    );
}

#[test]
fn stamps_of_an_earlier_file_are_removed_by_the_next_write_and_by_provisioning() {
    let s = TempSession::new();
    let host = s.host();
    host.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();
    // A stamp from an earlier inbound.db of the same name, far ahead of this file's counter.
    let ghost = InboundStamp {
        change_counter: counter(&s) + 1000,
        written_at_ms: 1,
    };
    std::fs::File::create(stamp::stamp_dir(s.dir()).join(ghost.file_name())).unwrap();
    assert_eq!(stamp::newest_stamp(s.dir()).unwrap(), Some(ghost));
    host.inbound()
        .write_message(&message("m2", "hi").build())
        .unwrap();
    let all = stamp::stamps(s.dir()).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].change_counter, counter(&s));

    // Provisioning a new inbound.db clears what the old one left.
    std::fs::File::create(stamp::stamp_dir(s.dir()).join(ghost.file_name())).unwrap();
    std::fs::remove_file(&s.paths.inbound).unwrap();
    provision(&s.paths, None, &SystemClock).unwrap();
    assert!(stamp::stamps(s.dir()).unwrap().is_empty());
    // Provisioning an existing file keeps the stamps.
    host.inbound()
        .write_message(&message("m3", "hi").build())
        .unwrap();
    provision(&s.paths, None, &SystemClock).unwrap();
    assert_eq!(stamp::stamps(s.dir()).unwrap().len(), 1);
}

#[test]
fn a_failed_write_leaves_no_new_stamp() {
    let s = TempSession::new();
    let host = s.host();
    host.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();
    let before = stamp::stamps(s.dir()).unwrap();
    // Same id, other content: refused inside the transaction.
    host.inbound()
        .write_message(&message("m1", "other").build())
        .unwrap_err();
    assert_eq!(stamp::stamps(s.dir()).unwrap(), before);
}
