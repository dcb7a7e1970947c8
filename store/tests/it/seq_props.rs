//! Seq allocation under random interleavings of both sides (docs/format.md §5): host writes
//! (single and batched), host-originated replies, container replies to random earlier
//! messages and unsolicited container messages, in any order. After every run:
//!
//! - every seq is unique across both files;
//! - host seqs (`messages_in`, `host_replies`) are even, container seqs (`messages_out`) odd;
//! - every reply's seq is greater than the seq of the message it answers;
//! - per side, seqs strictly increase in commit order;
//! - what each write returned is what the files hold.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use proptest::prelude::*;
use sessionbus_store::{AckStatus, NewHostReply, NewOutbound, Seq};
use sessionbus_testkit::{message, MemSession};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Op {
    /// The host writes `n` messages (`n` = 1: one `write_message`; more: one batch).
    HostWrite(usize),
    /// The host writes a reply of its own (a command denial) to its latest message.
    HostReply,
    /// The container answers the earlier message picked by `pick` (modulo how many exist),
    /// committing its completed ack with the reply; several replies when `n` > 1.
    ContainerReply { pick: usize, n: usize },
    /// The container writes `n` messages nobody asked for (progress notes, scheduled sends).
    ContainerUnsolicited(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..=4).prop_map(Op::HostWrite),
        1 => Just(Op::HostReply),
        4 => (any::<usize>(), 1usize..=2).prop_map(|(pick, n)| Op::ContainerReply { pick, n }),
        2 => (1usize..=3).prop_map(Op::ContainerUnsolicited),
    ]
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Nullable<Text>)]
    in_reply_to: Option<String>,
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let s = MemSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();

    let mut n_ids = 0usize;
    let mut fresh = |prefix: &str| {
        n_ids += 1;
        format!("{prefix}-{n_ids}")
    };
    // Commit order per side, and what each write said it got.
    let mut host_seqs: Vec<i64> = Vec::new();
    let mut container_seqs: Vec<i64> = Vec::new();
    let mut returned: HashMap<String, i64> = HashMap::new();
    let mut messages: Vec<(String, i64)> = Vec::new();

    for op in ops {
        match op {
            Op::HostWrite(n) => {
                let msgs: Vec<_> = (0..*n)
                    .map(|_| message(&fresh("m"), "hello").build())
                    .collect();
                let written = if *n == 1 {
                    vec![host.inbound().write_message(&msgs[0]).unwrap()]
                } else {
                    host.inbound().write_messages(&msgs).unwrap()
                };
                for (m, w) in msgs.iter().zip(written) {
                    prop_assert!(w.created);
                    host_seqs.push(w.seq.get());
                    returned.insert(m.id.clone(), w.seq.get());
                    messages.push((m.id.clone(), w.seq.get()));
                }
            }
            Op::HostReply => {
                let id = fresh("hr");
                let seq = host
                    .inbound()
                    .write_host_reply(&NewHostReply {
                        id: id.clone(),
                        in_reply_to: messages.last().map(|(m, _)| m.clone()),
                        address: Default::default(),
                        content: r#"{"text":"Permission denied"}"#.into(),
                    })
                    .unwrap();
                host_seqs.push(seq.get());
                returned.insert(id, seq.get());
            }
            Op::ContainerReply { pick, n } => {
                if messages.is_empty() {
                    continue;
                }
                let (target_id, target_seq) = messages[pick % messages.len()].clone();
                let target = container
                    .inbound()
                    .message_by_seq(Seq::new(target_seq).unwrap())
                    .unwrap()
                    .expect("the container sees every committed host row");
                prop_assert_eq!(&target.id, &target_id);
                let replies: Vec<NewOutbound> = (0..*n)
                    .map(|_| NewOutbound::reply_to(fresh("r"), &target, "answer"))
                    .collect();
                let seqs = container
                    .outbound()
                    .commit(
                        std::slice::from_ref(&target_id),
                        &AckStatus::Completed,
                        &replies,
                    )
                    .unwrap();
                for (r, q) in replies.iter().zip(seqs) {
                    container_seqs.push(q.get());
                    returned.insert(r.id.clone(), q.get());
                }
            }
            Op::ContainerUnsolicited(n) => {
                let out: Vec<NewOutbound> = (0..*n)
                    .map(|_| NewOutbound::chat(fresh("u"), "note"))
                    .collect();
                let seqs = if *n == 1 {
                    vec![container.outbound().write(&out[0]).unwrap()]
                } else {
                    container.outbound().write_all(&out).unwrap()
                };
                for (r, q) in out.iter().zip(seqs) {
                    container_seqs.push(q.get());
                    returned.insert(r.id.clone(), q.get());
                }
            }
        }
    }

    // Per side, strictly increasing in commit order, with the side's parity.
    prop_assert!(
        host_seqs.windows(2).all(|w| w[0] < w[1]),
        "host seqs out of commit order: {:?}",
        host_seqs
    );
    prop_assert!(
        container_seqs.windows(2).all(|w| w[0] < w[1]),
        "container seqs out of commit order: {:?}",
        container_seqs
    );

    // What the files hold, read through the role-true readers.
    let host_rows: Vec<Row> = container
        .inbound()
        .with_raw_connection(|c| {
            diesel::sql_query(
                "SELECT id, seq, NULL AS in_reply_to FROM messages_in WHERE kind <> 'host-reply' \
                 UNION ALL SELECT id, seq, in_reply_to FROM host_replies",
            )
            .load(c)
        })
        .unwrap();
    let container_rows: Vec<Row> = host
        .outbound()
        .with_raw_connection(|c| {
            diesel::sql_query("SELECT id, seq, in_reply_to FROM messages_out").load(c)
        })
        .unwrap();
    prop_assert_eq!(host_rows.len(), host_seqs.len());
    prop_assert_eq!(container_rows.len(), container_seqs.len());

    let mut all = HashSet::new();
    for r in &host_rows {
        prop_assert!(
            r.seq > 0 && r.seq % 2 == 0,
            "host row {} has seq {}",
            r.id,
            r.seq
        );
    }
    for r in &container_rows {
        prop_assert!(
            r.seq > 0 && r.seq % 2 == 1,
            "container row {} has seq {}",
            r.id,
            r.seq
        );
    }
    for r in host_rows.iter().chain(&container_rows) {
        prop_assert!(all.insert(r.seq), "seq {} used twice", r.seq);
        prop_assert_eq!(returned.get(&r.id), Some(&r.seq), "row {}", &r.id);
    }
    let seq_of: HashMap<&str, i64> = host_rows.iter().map(|r| (r.id.as_str(), r.seq)).collect();
    for r in &container_rows {
        if let Some(to) = &r.in_reply_to {
            let answered = seq_of[to.as_str()];
            prop_assert!(
                r.seq > answered,
                "reply {} (seq {}) is not after {} (seq {})",
                r.id,
                r.seq,
                to,
                answered
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn seqs_stay_unique_parity_true_and_ordered(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}

/// A fixed interleaving that exercises every rule at once, so that a regression shows up with
/// a readable case even before proptest shrinks one.
#[test]
fn a_fixed_interleaving() {
    let ops = [
        Op::ContainerUnsolicited(2), // seqs 1, 3 before any host row
        Op::HostWrite(1),            // 2
        Op::ContainerReply { pick: 0, n: 1 },
        Op::HostWrite(3),
        Op::HostReply,
        Op::ContainerReply { pick: 1, n: 2 },
        Op::ContainerReply { pick: 0, n: 1 },
        Op::HostWrite(2),
        Op::ContainerUnsolicited(1),
    ];
    run(&ops).unwrap();
}
