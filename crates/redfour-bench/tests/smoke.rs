//! Runs the built bench with `--quick --json` against a server it starts itself, and checks the
//! output contract: one JSON object per scenario, with exactly the documented fields; and with
//! `--topology cluster|sentinel|redlock` (deployments the test kit starts), one per topology
//! and scenario, labelled, the other topology's without the baselines.

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

/// Fields that only the standalone server reports: the baselines run on one server.
const BASELINE_FIELDS: &[&str] = &["raw_cycles_per_s", "node_cycles_per_s"];

/// Runs the built bench with `args`, asserts it succeeded, and returns its stdout and stderr.
fn run_bench(args: &[&str]) -> (String, String) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_redfour-bench"))
        .args(args)
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: exit status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    eprintln!("{args:?} took {:?}\n{stderr}", started.elapsed());
    (stdout, stderr)
}

/// The contract fields of `scenario`.
fn contract(scenario: &str) -> &'static [&'static str] {
    CONTRACT
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, fields)| *fields)
        .unwrap_or_else(|| panic!("no scenario {scenario} in the contract"))
}

/// Checks one JSON line: `scenario` first, then `topology` when given, then exactly `fields`,
/// each with a plausible value.
fn check_line(line: &str, scenario: &str, topology: Option<&str>, fields: &[&str]) {
    let object: Map<String, Value> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object: {e}\n{line}"));
    // The map's key order depends on serde_json features: compare as sets, and check the
    // order of `scenario` and `topology` in the text itself.
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut expected = vec!["scenario"];
    expected.extend(topology.map(|_| "topology"));
    expected.extend_from_slice(fields);
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "fields of {line}");
    let head = match topology {
        None => format!("{{\"scenario\":\"{scenario}\","),
        Some(t) => format!("{{\"scenario\":\"{scenario}\",\"topology\":\"{t}\","),
    };
    assert!(
        line.starts_with(&head),
        "`{head}` first and in order expected: {line}"
    );
    for field in fields {
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

#[test]
fn quick_json_run_prints_every_scenario_with_the_contract_fields() {
    let (stdout, stderr) = run_bench(&["--quick", "--json"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        CONTRACT.len(),
        "one line per scenario expected\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for (line, (scenario, fields)) in lines.iter().zip(CONTRACT) {
        check_line(line, scenario, None, fields);
    }
    // The handoff's yardsticks beside the targets: the floor of a notice on one server.
    for info in [
        "(info) notice floor: PUBLISH / idle rtt p50",
        "(info) notice floor: script / idle rtt p50",
        "(info) release→notice beyond the script floor (µs)",
    ] {
        assert!(
            stderr.contains(info),
            "no `{info}` in the target table:\n{stderr}"
        );
    }
}

/// A `--quick --json --topology T` run: for each of `scenarios`, the standalone line and then
/// T's, both labelled; T's without the baselines; the target table shows T's comparisons.
fn check_topology_run(topology: &str, scenarios: &[&str]) {
    let (stdout, stderr) = run_bench(&["--quick", "--json", "--topology", topology]);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<(&str, &str)> = scenarios
        .iter()
        .flat_map(|s| [(*s, "standalone"), (*s, topology)])
        .collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per topology and scenario expected\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for (line, (scenario, on)) in lines.iter().zip(expected) {
        let fields: Vec<&str> = contract(scenario)
            .iter()
            .copied()
            .filter(|f| on == "standalone" || !BASELINE_FIELDS.contains(f))
            .collect();
        check_line(line, scenario, Some(on), &fields);
    }
    for scenario in scenarios {
        assert!(
            stderr.contains(&format!("{topology}/standalone: {scenario}")),
            "no {topology}/standalone comparison of {scenario} in the target table:\n{stderr}"
        );
    }
}

#[test]
fn quick_cluster_run_pairs_every_line_with_its_standalone_twin() {
    check_topology_run(
        "cluster",
        &["uncontended", "parallel", "handoff", "contention"],
    );
}

#[test]
fn quick_sentinel_run_pairs_every_line_with_its_standalone_twin() {
    check_topology_run("sentinel", &["uncontended", "handoff", "contention"]);
}

#[test]
fn quick_redlock_run_pairs_every_line_with_its_standalone_twin() {
    check_topology_run("redlock", &["uncontended", "handoff", "contention"]);
}
