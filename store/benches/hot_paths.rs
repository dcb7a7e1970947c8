//! Criterion micro-benchmarks of the store's hot paths: seq assignment, timestamp parsing,
//! row mapping. Run with `cargo bench -p sessionbus-store`. (Whole-operation costs against a
//! raw-SQLite baseline are `cargo xtask bench`.)
//!
//! The database benchmarks use `MemSession` (SQLite's in-memory `memdb` VFS): the same opens,
//! pragmas, statements and mapping as on files, without the disk, so what is left is the
//! library's own CPU work.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use sessionbus_schema::{Seq, Timestamp};
use sessionbus_store::{AckStatus, NewOutbound, TimeText};
use sessionbus_testkit::{message, MemSession};
use std::time::Duration;

fn seq_assignment(c: &mut Criterion) {
    let mut g = c.benchmark_group("seq");
    g.bench_function("next_host", |b| {
        let mut m = 0i64;
        b.iter(|| {
            m += 3;
            black_box(Seq::next_host(black_box(Some(Seq::new(m).unwrap()))))
        })
    });
    g.bench_function("next_container", |b| {
        let mut m = 0i64;
        b.iter(|| {
            m += 3;
            black_box(Seq::next_container(black_box(Some(Seq::new(m).unwrap()))))
        })
    });
    // The whole write path around the allocation: open, BEGIN IMMEDIATE, max over both host
    // tables, id lookup, insert, commit, close (in memory).
    g.bench_function("host_write_message_memdb", |b| {
        let s = MemSession::new();
        let host = s.host();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(
                host.inbound()
                    .write_message(&message(&format!("m-{n}"), "hello").build())
                    .unwrap(),
            )
        })
    });
    // The container's odd seq: max over its own table and a fresh read of inbound.db, inside
    // the outbound write transaction.
    g.bench_function("container_write_reply_memdb", |b| {
        let s = MemSession::new();
        s.host()
            .inbound()
            .write_message(&message("m-1", "hello").build())
            .unwrap();
        let container = s.container();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(
                container
                    .outbound()
                    .write(&NewOutbound::chat(format!("r-{n}"), "echo"))
                    .unwrap(),
            )
        })
    });
    g.finish();
}

fn timestamps(c: &mut Criterion) {
    let mut g = c.benchmark_group("timestamp");
    g.bench_function("parse_iso", |b| {
        b.iter(|| Timestamp::parse(black_box("2026-04-21T12:05:19.123Z")).unwrap())
    });
    g.bench_function("parse_sqlite", |b| {
        b.iter(|| Timestamp::parse(black_box("2026-04-21 12:05:19")).unwrap())
    });
    g.bench_function("parse_garbage", |b| {
        b.iter(|| Timestamp::parse(black_box("not a time")).is_err())
    });
    let now = Timestamp::parse("2026-04-21T12:00:00Z").unwrap();
    let due = TimeText("2026-04-21 11:59:00".into());
    g.bench_function("time_text_is_due", |b| {
        b.iter(|| black_box(&due).is_due(black_box(now)))
    });
    g.bench_function("to_iso", |b| b.iter(|| black_box(now).to_iso()));
    g.bench_function("to_sqlite", |b| b.iter(|| black_box(now).to_sqlite()));
    g.finish();
}

fn row_mapping(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows");
    for n in [1usize, 10, 100] {
        // Pending rows of inbound.db: open read-only, load, map 16 columns into `MessageIn`.
        let s = MemSession::new();
        let host = s.host();
        for i in 0..n {
            host.inbound()
                .write_message(&message(&format!("m-{i}"), "hello there").build())
                .unwrap();
        }
        let container = s.container();
        g.bench_function(format!("pending_{n}_memdb"), |b| {
            b.iter(|| black_box(container.inbound().pending().unwrap()))
        });
        // The same rows as `messages_out` read by the host: 11 columns into `MessageOut`.
        let replies: Vec<NewOutbound> = (0..n)
            .map(|i| NewOutbound::chat(format!("r-{i}"), "a reply of some length"))
            .collect();
        container
            .outbound()
            .commit(&[], &AckStatus::Completed, &replies)
            .unwrap();
        g.bench_function(format!("messages_after_{n}_memdb"), |b| {
            b.iter(|| black_box(host.outbound().messages_after(None, 1000).unwrap()))
        });
    }
    // A full poll of ten pending messages: pending rows, filters, acks among them, batch.
    g.bench_function("poll_10_memdb", |b| {
        b.iter_batched(
            || {
                let s = MemSession::new();
                for i in 0..10 {
                    s.host()
                        .inbound()
                        .write_message(&message(&format!("m-{i}"), "hello").build())
                        .unwrap();
                }
                s
            },
            |s| black_box(s.container().poll_after_start(10).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = seq_assignment, timestamps, row_mapping
}
criterion_main!(benches);
