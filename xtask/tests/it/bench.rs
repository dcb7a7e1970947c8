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
            "--scale",
            "3",
            "--e2e-sessions",
            "1,2",
            "--waves",
            "2",
            "--hostile-size",
            "100",
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

    assert_eq!(report["format"], 2);
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

    let ext = &report["extended"];
    let latency = ext["latency"].as_array().expect("latency runs");
    let shapes: Vec<(String, u64)> = latency
        .iter()
        .map(|l| {
            (
                l["mode"].as_str().unwrap().to_string(),
                l["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("inotify".to_string(), 1),
            ("inotify".to_string(), 2),
            ("polling".to_string(), 1),
            // One session again on --dir, when --mem-dir is another folder.
            ("inotify".to_string(), 1),
        ]
    );
    for l in latency {
        assert_eq!(
            l["samples"].as_u64(),
            Some(2 * l["sessions"].as_u64().unwrap())
        );
        finite(&l["p50_ms"], "latency p50");
        finite(&l["p99_ms"], "latency p99");
        finite(&l["worst_session_p99_ms"], "worst session p99");
        let modes = l["container_modes"].as_array().expect("container modes");
        assert_eq!(modes.len(), 1, "{modes:?}");
        let mode = modes[0].as_str().unwrap();
        if l["mode"] == "polling" {
            assert!(mode.starts_with("polling (requested"), "{mode}");
        } else {
            assert_eq!(mode, "inotify", "a temp dir on a local disk");
        }
    }
    let tput = ext["throughput"].as_array().expect("throughput runs");
    assert_eq!(tput.len(), 4, "one session and many, in each folder");
    for t in tput {
        finite(&t["msgs_per_sec"], "throughput");
    }
    assert_eq!(tput[1]["sessions"], 2);
    assert_eq!(ext["scale"]["sessions"], 3);
    for side in 0..2 {
        finite(&ext["scale"]["cold_ms"][side]["median"], "cold pass");
        finite(&ext["scale"]["steady_ms"][side]["median"], "steady pass");
    }
    let hostile = ext["hostile"].as_array().expect("hostile runs");
    let attacks: Vec<&str> = hostile
        .iter()
        .map(|h| h["attack"].as_str().unwrap())
        .collect();
    assert_eq!(
        attacks,
        [
            "claims",
            "huge_rows",
            "many_tables",
            "deep_schema",
            "far_future"
        ]
    );
    for h in hostile {
        finite(&h["worst_ms"], "hostile pass");
    }

    let targets = report["targets"].as_array().expect("targets");
    // A ratio per workload, a growth per idle poll, one per sweep (running, stopped, steady
    // state), one for memory; then latency p50 and p99 of each one-session run and the
    // busiest run's worst session, the idle CPU of the two modes, the scale's steady and cold
    // passes and their two ratios, the hostile time and memory.
    assert_eq!(targets.len(), workloads.len() + 3 + 3 + 1 + 5 + 1 + 4 + 2);
    let cpu = ext["idle_cpu"].as_array().expect("idle CPU runs");
    assert_eq!(cpu.len(), 2);
    assert!(targets.iter().all(|t| t["met"].is_boolean()));

    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.contains("<svg"), "not an SVG");
    assert!(
        chart.contains("host ack sync (raw baseline)"),
        "legend missing"
    );
    let latency_chart =
        std::fs::read_to_string(tmp_svg.path().join("idle-latency.svg")).expect("latency chart");
    assert!(
        latency_chart.contains("change notification p99"),
        "legend missing"
    );
}

#[test]
fn the_older_implementation_column_never_fails_the_bench() {
    let (out, _tmp) = tiny_bench(&["--only", "idle_poll", "--peer", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let peer = &report["extended"]["peer"];
    if peer["available"] == true {
        let points = peer["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "one per history");
        for p in points {
            for (_, fig) in p["polls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (x[0].clone(), x[1].clone()))
            {
                finite(&fig["median"], "peer poll");
            }
        }
    } else {
        assert_eq!(peer["available"], false);
        assert!(!peer["reason"].as_str().unwrap().is_empty());
    }
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
