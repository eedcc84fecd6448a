//! `rtt`: the round trip of `PING` on the library's connection stack, the unit every other
//! target is expressed in.

use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::ping_latencies;
use crate::Result;

/// Sequential `PING`s on a `ConnectionManager` configured like redfour's.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let mut conn = ctx.target.connection().await?;
    let p = &ctx.params;
    let rtt = ping_latencies(&mut conn, p.rtt_warmup, p.rtt_samples).await?;
    Ok(Report::Rtt {
        p50_us: rtt.p50_us(),
        p99_us: rtt.p99_us(),
    })
}
