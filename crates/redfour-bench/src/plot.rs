//! `--plot FILE.svg`: the distribution of handoff latencies as a CDF on a log axis, with the
//! round trip and the p50 target drawn as vertical lines for scale.

use std::path::Path;

use plotters::prelude::*;

use crate::Result;

/// Draws the CDF of `samples_us` (ascending, µs) into the SVG file `path`.
pub fn handoff_cdf(path: &Path, samples_us: &[f64], rtt_p50_us: f64) -> Result<()> {
    let (Some(&first), Some(&last)) = (samples_us.first(), samples_us.last()) else {
        return Err("no handoff samples to plot".into());
    };
    // A log axis needs positive bounds; pad them so the extremes are not on the frame.
    let lo = first.min(rtt_p50_us).max(1.0) / 1.5;
    let hi = last.max(rtt_p50_us * 1.2).max(lo * 2.0) * 1.5;
    let n = samples_us.len() as f64;

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("redfour handoff latency ({} samples)", samples_us.len()),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("release call → waiter holds (µs, log scale)")
        .x_label_formatter(&|us| format!("{us:.0}"))
        .y_desc("fraction of handoffs")
        .draw()?;

    // A step CDF: each sample raises the curve by 1/n.
    let mut steps = Vec::with_capacity(samples_us.len() * 2);
    for (i, &us) in samples_us.iter().enumerate() {
        steps.push((us, i as f64 / n));
        steps.push((us, (i + 1) as f64 / n));
    }
    chart
        .draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))?
        .label("handoff CDF")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));

    let vertical = |x: f64| vec![(x, 0.0), (x, 1.0)];
    chart
        .draw_series(LineSeries::new(vertical(rtt_p50_us), &BLACK))?
        .label(format!("PING p50 ({rtt_p50_us} µs)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(LineSeries::new(vertical(rtt_p50_us * 1.2), &RED))?
        .label("target for p50: 1.2 × PING p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
