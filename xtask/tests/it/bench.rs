//! `cargo xtask bench` end to end with tiny sizes, in whatever build the tests run: checks the
//! shape of the JSON report (every workload group present, figures and ratios finite), the
//! table, and the SVG chart. Never timings: those are for `cargo xtask bench` to print.

use serde_json::Value;
use std::process::Command;

fn tiny_bench(extra: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--quick",
            "--no-release",
            "--runs",
            "1",
            "--messages",
            "2",
            "--ops",
            "3",
            "--history",
            "10,30",
            "--sessions",
            "3",
            "--memory",
            "20,40",
        ])
        .arg("--dir")
        .arg(tmp.path().join("disk"))
        .arg("--mem-dir")
        .arg(tmp.path().join("mem"))
        .args(extra)
        .output()
        .expect("run the xtask binary");
    (out, tmp)
}

fn finite(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn quick_json_report_has_every_workload_with_finite_ratios_and_draws_the_chart() {
    let tmp_svg = tempfile::tempdir().unwrap();
    let svg = tmp_svg.path().join("idle.svg");
    let (out, _tmp) = tiny_bench(&["--json", "--svg", svg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stderr}"));

    assert_eq!(report["format"], 1);
    assert_eq!(report["quick"], true);
    assert!(report["sqlite_version"].as_str().unwrap().starts_with('3'));
    let workloads = report["workloads"].as_array().expect("workloads");
    let ids: Vec<&str> = workloads
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    for id in [
        "round_trip.single.disk",
        "round_trip.batch10.disk",
        "round_trip.single.tmpfs",
        "round_trip.batch10.tmpfs",
        "idle.pending_poll.h10",
        "idle.due_outbound.h10",
        "idle.ack_sync.h10",
        "idle.pending_poll.h30",
        "idle.due_outbound.h30",
        "idle.ack_sync.h30",
        "open.host_inbound_writer",
        "open.host_outbound_reader",
        "open.container_inbound_reader",
        "open.container_outbound_writer",
        "sweep.running.s3",
        "sweep.stopped.s3",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for w in workloads {
        let id = w["id"].as_str().unwrap();
        finite(&w["ratio"], &format!("{id} ratio"));
        for side in ["library", "raw"] {
            finite(&w[side]["median"], &format!("{id} {side} median"));
            finite(&w[side]["min"], &format!("{id} {side} min"));
            finite(&w[side]["max"], &format!("{id} {side} max"));
            assert_eq!(w[side]["runs"].as_array().unwrap().len(), 1, "{id}");
        }
        if w["group"] == "round_trip" {
            let rates = w["msgs_per_sec"].as_array().expect("msgs_per_sec");
            finite(&rates[0], &format!("{id} library msg/s"));
            finite(&rates[1], &format!("{id} raw msg/s"));
        }
    }

    let scaling = report["scaling"].as_array().expect("scaling");
    assert_eq!(scaling.len(), 3);
    for s in scaling {
        assert_eq!(s["histories"], serde_json::json!([10, 30]));
        finite(&s["library_growth"], "library growth");
        finite(&s["raw_growth"], "raw growth");
    }

    let points = report["memory"]["points"]
        .as_array()
        .expect("memory points");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["messages"], 20);
    assert_eq!(points[1]["messages"], 40);
    for p in points {
        finite(&p["peak_rss_kib"], "peak RSS");
    }
    finite(&report["memory"]["peak_growth"], "memory growth");

    let targets = report["targets"].as_array().expect("targets");
    // A ratio per workload, a growth per idle poll, one per sweep (running, stopped, steady
    // state), one for memory.
    assert_eq!(targets.len(), workloads.len() + 3 + 3 + 1);
    assert!(targets.iter().all(|t| t["met"].is_boolean()));

    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.contains("<svg"), "not an SVG");
    assert!(
        chart.contains("host ack sync (raw baseline)"),
        "legend missing"
    );
}

#[test]
fn the_table_names_every_group_and_the_targets() {
    let (out, _tmp) = tiny_bench(&["--only", "open,sweep", "--memory", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DEBUG (numbers meaningless)"), "{text}");
    assert!(text.contains("open: host, inbound.db writer"), "{text}");
    assert!(text.contains("sweep of 3 idle sessions"), "{text}");
    assert!(text.contains("targets:"), "{text}");
    assert!(
        !text.contains("round trip"),
        "--only open,sweep ran round trips: {text}"
    );
}
