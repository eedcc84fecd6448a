//! `--plot FILE.svg`: the distribution of handoff latencies as a CDF on a log axis, with the
//! idle round trip and the p50 target drawn as vertical lines for scale; other runs' samples
//! (`--plot-with`, saved by `--save-samples`) drawn beside this run's, for a before/after.

use std::path::Path;

use plotters::prelude::*;

use crate::Result;

/// One curve of the plot: a label and its samples, µs, ascending.
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// Handoff latencies, µs, ascending.
    pub samples_us: Vec<f64>,
}

/// The curves' colours, in order.
const COLOURS: [RGBColor; 4] = [BLUE, GREEN, MAGENTA, CYAN];

/// Draws the CDF of each series into the SVG file `path`, with `idle_rtt_p50_us` (the median
/// `PING` after an idle pause, the handoff target's yardstick) and the p50 target.
pub fn handoff_cdf(path: &Path, series: &[Series], idle_rtt_p50_us: f64) -> Result<()> {
    let all = series.iter().flat_map(|s| s.samples_us.iter().copied());
    let (first, last) = all.fold((f64::MAX, f64::MIN), |(lo, hi), us| {
        (lo.min(us), hi.max(us))
    });
    if series.iter().any(|s| s.samples_us.is_empty()) || first > last {
        return Err("no handoff samples to plot".into());
    }
    let rtt_p50_us = idle_rtt_p50_us;
    // A log axis needs positive bounds; pad them so the extremes are not on the frame.
    let lo = first.min(rtt_p50_us).max(1.0) / 1.5;
    let hi = last.max(rtt_p50_us * 1.2).max(lo * 2.0) * 1.5;

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("redfour handoff latency", ("sans-serif", 22))
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

    for (curve, colour) in series.iter().zip(COLOURS.iter().cycle()) {
        // A step CDF: each sample raises the curve by 1/n.
        let n = curve.samples_us.len() as f64;
        let mut steps = Vec::with_capacity(curve.samples_us.len() * 2);
        for (i, &us) in curve.samples_us.iter().enumerate() {
            steps.push((us, i as f64 / n));
            steps.push((us, (i + 1) as f64 / n));
        }
        let style = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(steps, style))?
            .label(format!(
                "{} ({} samples)",
                curve.label,
                curve.samples_us.len()
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }

    let vertical = |x: f64| vec![(x, 0.0), (x, 1.0)];
    chart
        .draw_series(LineSeries::new(vertical(rtt_p50_us), &BLACK))?
        .label(format!("PING p50 after an idle pause ({rtt_p50_us} µs)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(LineSeries::new(vertical(rtt_p50_us * 1.2), &RED))?
        .label("target for p50: 1.2 × that PING")
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

/// Writes `samples_us` to `path`, one number per line (µs), for a later run's `--plot-with`.
pub fn save_samples(path: &Path, samples_us: &[f64]) -> Result<()> {
    let mut text = String::with_capacity(samples_us.len() * 8);
    for us in samples_us {
        text.push_str(&format!("{us}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Reads samples written by [`save_samples`], labelled by the file's name without its
/// extension; ascending.
pub fn load_samples(path: &Path) -> Result<Series> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut samples_us = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let us: f64 = line
            .trim()
            .parse()
            .map_err(|_| format!("{}:{}: not a number of µs: `{line}`", path.display(), n + 1))?;
        if !us.is_finite() || us < 0.0 {
            return Err(format!("{}:{}: not a latency: `{line}`", path.display(), n + 1).into());
        }
        samples_us.push(us);
    }
    if samples_us.is_empty() {
        return Err(format!("{} holds no samples", path.display()).into());
    }
    samples_us.sort_unstable_by(f64::total_cmp);
    let label = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Ok(Series { label, samples_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("rfbench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("before.txt");
        save_samples(&path, &[120.5, 99.0, 300.25]).unwrap();
        let series = load_samples(&path).unwrap();
        assert_eq!(series.label, "before");
        assert_eq!(series.samples_us, [99.0, 120.5, 300.25]);

        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "12\nabc\n").unwrap();
        let e = load_samples(&bad).err().unwrap().to_string();
        assert!(e.contains("bad.txt:2"), "{e}");
        std::fs::write(&bad, "-3\n").unwrap();
        assert!(load_samples(&bad).is_err());
        std::fs::write(&bad, "\n").unwrap();
        assert!(load_samples(&bad).is_err());
        assert!(load_samples(&dir.join("missing.txt")).is_err());

        let svg = dir.join("plot.svg");
        handoff_cdf(&svg, &[series], 100.0).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
