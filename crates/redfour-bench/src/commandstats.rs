//! Reading `INFO commandstats`: how often the server ran a command, and for how long (for the
//! scenarios that count the server's calls or its time: server_cost, handoff, throughput).

/// The sum of `{field}=` (`calls`, `usec`, …) over the `cmdstat_{name}` lines for `names`
/// (lower case). 0 for a command that has not run (Redis omits its line); `None` when the text
/// is not a commandstats section or a line cannot be read.
///
/// A script's figures include the commands it calls, which Redis also counts on their own
/// lines: name only the commands a client sent.
pub fn sum(info: &str, names: &[&str], field: &str) -> Option<u64> {
    if !info.contains("# Commandstats") {
        return None;
    }
    let mut total = 0u64;
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if !names.contains(&name) {
            continue;
        }
        total += fields
            .split(',')
            .find_map(|f| f.strip_prefix(field)?.strip_prefix('='))
            .and_then(|n| n.trim().parse::<u64>().ok())?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls() {
        let info = "# Commandstats\r\ncmdstat_eval:calls=2,usec=10,usec_per_call=5.00\r\n\
                    cmdstat_evalsha:calls=1234,usec=99,usec_per_call=0.08,rejected_calls=0\r\n";
        assert_eq!(sum(info, &["evalsha"], "calls"), Some(1234));
        assert_eq!(
            sum(
                "# Commandstats\r\ncmdstat_ping:calls=1\r\n",
                &["evalsha"],
                "calls"
            ),
            Some(0)
        );
        assert_eq!(sum("", &["evalsha"], "calls"), None);
    }

    #[test]
    fn sums_the_time_of_the_named_commands() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=120,usec_per_call=12.00\r\n\
                    cmdstat_hset:calls=10,usec=20,usec_per_call=2.00\r\n\
                    cmdstat_set:calls=5,usec=5,usec_per_call=1.00\r\n\
                    cmdstat_info:calls=3,usec=300,usec_per_call=100.00\r\n";
        assert_eq!(sum(info, &["evalsha"], "usec"), Some(120));
        assert_eq!(sum(info, &["evalsha", "set"], "usec"), Some(125));
        assert_eq!(sum(info, &["ping"], "usec"), Some(0));
        assert_eq!(sum("nope", &["set"], "usec"), None);
        // `usec` is not `usec_per_call`.
        assert_eq!(
            sum(
                "# Commandstats\r\ncmdstat_set:usec_per_call=1.00\r\n",
                &["set"],
                "usec"
            ),
            None
        );
    }
}
