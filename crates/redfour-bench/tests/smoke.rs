//! Runs the built bench with `--quick --json` against a server it starts itself, and checks the
//! output contract: one JSON object per scenario, with exactly the documented fields.

use std::process::Command;
use std::time::Instant;

use serde_json::{Map, Value};

/// The contract: each scenario, in running order, and its fields besides `scenario`.
const CONTRACT: &[(&str, &[&str])] = &[
    ("rtt", &["p50_us", "p99_us"]),
    ("uncontended", &["cycles_per_s", "raw_cycles_per_s"]),
    (
        "parallel",
        &[
            "tasks",
            "cycles_per_s",
            "raw_cycles_per_s",
            "node_cycles_per_s",
        ],
    ),
    (
        "server_cost",
        &[
            "acquire_us",
            "release_us",
            "handoff_us",
            "node_acquire_us",
            "node_release_us",
        ],
    ),
    (
        "handoff",
        &["p50_us", "p99_us", "rtt_p50_us", "idle_rtt_p50_us"],
    ),
    (
        "contention",
        &[
            "workers",
            "seconds",
            "handoffs_per_s",
            "min_acquisitions",
            "max_acquisitions",
            "max_wait_ms",
            "wakeups_per_handoff",
            "wait_p99_ms",
        ],
    ),
    (
        "waiters",
        &["waiters", "connections", "rss_growth_mb", "all_acquired"],
    ),
];

#[test]
fn quick_json_run_prints_every_scenario_with_the_contract_fields() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_redfour-bench"))
        .args(["--quick", "--json"])
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        CONTRACT.len(),
        "one line per scenario expected\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for (line, (scenario, fields)) in lines.iter().zip(CONTRACT) {
        let object: Map<String, Value> =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object: {e}\n{line}"));
        // The map's key order depends on serde_json features: compare as sets, and check that
        // `scenario` comes first in the text itself.
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = vec!["scenario"];
        expected.extend_from_slice(fields);
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected, "fields of {line}");
        assert!(
            line.starts_with(&format!("{{\"scenario\":\"{scenario}\",")),
            "scenario first and in order expected: {line}"
        );
        for field in *fields {
            let value = &object[*field];
            let ok = match *field {
                "all_acquired" => value.is_boolean(),
                // Null only where the platform cannot tell (no /proc).
                "rss_growth_mb" => value.is_number() || value.is_null(),
                _ => value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
            };
            assert!(ok, "{field} = {value} in {line}");
        }
    }
    eprintln!("quick run took {:?}\n{stderr}", started.elapsed());
}
