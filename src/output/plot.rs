//! PNG charts (plotters, bitmap backend). Text needs a TrueType font: `VPOP_FONT` names one,
//! else the usual system locations are tried (DejaVu Sans, Liberation Sans, Arial); without
//! any, charts are drawn without text and a warning says so.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// Font files tried in order when `VPOP_FONT` is not set.
const FONT_CANDIDATES: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a font as "sans-serif" once; whether one was found.
pub fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let from_env = std::env::var("VPOP_FONT").ok();
        let paths = from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied());
        for p in paths {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart builder with a margin, and a caption and axis label areas when there is text.
fn chart_builder<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    title: &str,
    text: bool,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(10);
    if text {
        builder
            .caption(title, ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(56);
    }
    builder
}

/// The series legend in a white box (plotters' default place: the middle of the right side).
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), String> {
    legend_at(chart, SeriesLabelPosition::MiddleRight)
}

fn legend_at<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Where a histogram's legend covers least: the upper corner over the third of the bins with
/// the lower peak, and the height of the plot that keeps that peak below the legend (which
/// takes about the top quarter).
fn legend_corner(dens: &[Vec<f64>], bins: usize, top: f64) -> (SeriesLabelPosition, f64) {
    let third = (bins / 3).max(1);
    let peak = |range: std::ops::Range<usize>| {
        dens.iter()
            .flat_map(|h| h[range.clone()].iter())
            .fold(0.0f64, |a, b| a.max(*b))
    };
    let (left, right) = (
        peak(0..third.min(bins)),
        peak(bins.saturating_sub(third)..bins),
    );
    let (corner, peak) = if left < right {
        (SeriesLabelPosition::UpperLeft, left)
    } else {
        (SeriesLabelPosition::UpperRight, right)
    };
    (corner, top.max(peak / 0.72))
}

/// One group of bars: a title and, per category, bars (label, value, half-width or NaN).
pub struct BarPanel {
    pub title: String,
    pub categories: Vec<String>,
    /// `bars[c]`: the bars of category c, the same series in every category.
    pub bars: Vec<Vec<(String, f64, f64)>>,
}

/// The colours of up to ten series: Tableau 10 (Tableau's default categorical palette, as
/// matplotlib's `tab10` gives it).
const SERIES: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of series `i` of `n`: [`SERIES`] up to ten, beyond that hues spread evenly
/// around the colour wheel, so that no two series of a chart share a colour.
pub fn series_color(i: usize, n: usize) -> RGBColor {
    if n <= SERIES.len() {
        return SERIES[i % SERIES.len()];
    }
    let c = HSLColor(i as f64 / n as f64, 0.7, 0.42).to_backend_color();
    RGBColor(c.rgb.0, c.rgb.1, c.rgb.2)
}

/// Grouped bar charts with error bars, one panel per [`BarPanel`], stacked vertically.
pub fn bar_panels(path: &Path, panels: &[BarPanel]) -> Result<(), String> {
    grid(path, panels, 1, |area, panel, text| {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let nc = panel.categories.len().max(1);
        let ns = panel.bars.first().map_or(1, |b| b.len().max(1));
        let reach = |sign: f64| {
            panel
                .bars
                .iter()
                .flatten()
                .map(|(_, v, c)| v + sign * if c.is_finite() { *c } else { 0.0 })
                // A value that is not finite has no bar (an axis to infinity has no ticks).
                .filter(|x| x.is_finite())
                .fold(0.0f64, |a, b| if sign > 0.0 { a.max(b) } else { a.min(b) })
                * 1.1
        };
        // Within a quarter of the largest float each way, so that the axis's span is finite.
        let limit = f64::MAX / 4.0;
        let (lo, hi) = (reach(-1.0).max(-limit), reach(1.0).max(1e-12).min(limit));
        let mut builder = chart_builder(area, &panel.title, text);
        let mut chart = builder
            .build_cartesian_2d(0f64..nc as f64, lo..hi)
            .map_err(|e| err(&e))?;
        if text {
            let cats = panel.categories.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(nc * 2 + 1)
                .x_label_formatter(&move |x: &f64| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.26 {
                        cats.get(i).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(|e| err(&e))?;
        }
        let width = 0.8 / ns as f64;
        for (c, bars) in panel.bars.iter().enumerate() {
            for (s, (label, v, ci)) in bars.iter().enumerate() {
                let color = series_color(s, ns);
                let x0 = c as f64 + 0.1 + s as f64 * width;
                let x1 = x0 + width * 0.9;
                // An undefined value (NaN) draws no bar.
                let top = if v.is_finite() { *v } else { 0.0 };
                let bar = Rectangle::new([(x0, 0.0), (x1, top)], color.filled());
                let series = chart
                    .draw_series(std::iter::once(bar))
                    .map_err(|e| err(&e))?;
                if c == 0 && text {
                    series.label(label.clone()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
                }
                if ci.is_finite() && v.is_finite() {
                    let xm = 0.5 * (x0 + x1);
                    let whisker = PathElement::new(vec![(xm, v - ci), (xm, v + ci)], BLACK);
                    chart
                        .draw_series(std::iter::once(whisker))
                        .map_err(|e| err(&e))?;
                }
            }
        }
        if text {
            legend(&mut chart).map_err(|e| err(&e))?;
        }
        Ok(())
    })
}

/// Distributions of one quantity by group (arm): a title and per group (label, values).
pub struct HistPanel {
    pub title: String,
    pub groups: Vec<(String, Vec<f64>)>,
}

/// One group's percentile band: (label, 5th, median, 95th percentile at every x).
pub type Band = (String, Vec<f64>, Vec<f64>, Vec<f64>);

/// Percentile bands over x by group.
pub struct BandPanel {
    pub title: String,
    pub x_label: String,
    pub x: Vec<f64>,
    pub groups: Vec<Band>,
    /// Observed (x, y) points drawn over the bands (e.g. a dataset's DV), with their label.
    pub points: Option<(String, Vec<(f64, f64)>)>,
}

/// Renders panels in a grid of `cols` columns under a temporary name, then renames.
fn grid<T>(
    path: &Path,
    panels: &[T],
    cols: usize,
    draw_one: impl Fn(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
        &T,
        bool,
    ) -> Result<(), String>,
) -> Result<(), String> {
    let text = font_available();
    if !text {
        eprintln!(
            "warning: no TrueType font found (set VPOP_FONT=/path/to/font.ttf): {} has no labels",
            path.display()
        );
    }
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let width = (560 * cols).max(960) as u32;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{}.tmp.png", name.trim_end_matches(".png")));
    {
        let root = BitMapBackend::new(&tmp, (width, (360 * rows) as u32)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let areas = root.split_evenly((rows, cols));
        for (p, area) in panels.iter().zip(areas.iter()) {
            draw_one(area, p, text)?;
        }
        root.present()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Histograms (density-scaled outlines) of each group, panel by panel, between the 0.5th and
/// 99.5th percentiles of all groups together (each panel's title says so): the values beyond
/// are left out, so that a few extreme subjects do not squeeze the rest into a few bins.
pub fn hist_panels(path: &Path, panels: &[HistPanel], bins: usize) -> Result<(), String> {
    grid(path, panels, 2, |area, panel, text| {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut all: Vec<f64> = panel
            .groups
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .filter(|v| v.is_finite())
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        all.sort_by(f64::total_cmp);
        let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
        let (mut lo, mut hi) = (q(0.005), q(0.995));
        if hi <= lo {
            lo -= 0.5 * lo.abs().max(1e-12);
            hi += 0.5 * hi.abs().max(1e-12);
        }
        let w = (hi - lo) / bins as f64;
        let dens: Vec<Vec<f64>> = panel
            .groups
            .iter()
            .map(|(_, v)| {
                let mut h = vec![0.0; bins];
                let n = v.iter().filter(|x| x.is_finite()).count().max(1) as f64;
                for x in v.iter().filter(|x| x.is_finite() && **x >= lo && **x <= hi) {
                    let b = (((x - lo) / w) as usize).min(bins - 1);
                    h[b] += 1.0 / (n * w);
                }
                h
            })
            .collect();
        let top = dens
            .iter()
            .flatten()
            .fold(0.0f64, |a, b| a.max(*b))
            .max(1e-300)
            * 1.1;
        let (corner, top) = legend_corner(&dens, bins, top);
        // The axis spans the central 99 % of the values; the title says so.
        let title = format!("{} (0.5th–99.5th percentile)", panel.title);
        let mut builder = chart_builder(area, &title, text);
        let mut chart = builder
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(|e| err(&e))?;
        if text {
            chart
                .configure_mesh()
                .y_desc("density")
                .x_labels(6)
                .draw()
                .map_err(|e| err(&e))?;
        }
        for (g, h) in dens.iter().enumerate() {
            let color = series_color(g, dens.len());
            let mut pts = vec![(lo, 0.0)];
            for (b, d) in h.iter().enumerate() {
                pts.push((lo + b as f64 * w, *d));
                pts.push((lo + (b + 1) as f64 * w, *d));
            }
            pts.push((hi, 0.0));
            let s = chart
                .draw_series(std::iter::once(PathElement::new(
                    pts,
                    color.stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
            if text {
                s.label(panel.groups[g].0.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
        if text {
            legend_at(&mut chart, corner).map_err(|e| err(&e))?;
        }
        Ok(())
    })
}

/// Median lines with shaded 5th–95th percentile bands, one panel per output.
pub fn band_panels(path: &Path, panels: &[BandPanel]) -> Result<(), String> {
    grid(path, panels, 1, |area, panel, text| {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let (x0, x1) = (
            panel.x.first().copied().unwrap_or(0.0),
            panel.x.last().copied().unwrap_or(1.0),
        );
        let top = panel
            .groups
            .iter()
            .flat_map(|g| g.3.iter().copied())
            .chain(panel.points.iter().flat_map(|p| p.1.iter().map(|q| q.1)))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-300)
            * 1.05;
        // Room above the bands for the legend (about 20 pixels a row) at the upper right.
        let rows = panel.groups.len() + usize::from(panel.points.is_some());
        let plot_px = (area.dim_in_pixel().1 as f64 - 70.0).max(60.0);
        let legend_share = ((rows as f64 * 20.0 + 16.0) / plot_px).min(0.5);
        let top = if text {
            top / (1.0 - legend_share)
        } else {
            top
        };
        let mut builder = chart_builder(area, &panel.title, text);
        let mut chart = builder
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), 0.0..top)
            .map_err(|e| err(&e))?;
        if text {
            chart
                .configure_mesh()
                .x_desc(panel.x_label.as_str())
                .draw()
                .map_err(|e| err(&e))?;
        }
        for (g, (label, lo, mid, hi)) in panel.groups.iter().enumerate() {
            let color = series_color(g, panel.groups.len());
            let mut poly: Vec<(f64, f64)> =
                panel.x.iter().copied().zip(hi.iter().copied()).collect();
            poly.extend(panel.x.iter().copied().zip(lo.iter().copied()).rev());
            poly.retain(|p| p.1.is_finite());
            chart
                .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                .map_err(|e| err(&e))?;
            let line: Vec<(f64, f64)> = panel
                .x
                .iter()
                .copied()
                .zip(mid.iter().copied())
                .filter(|p| p.1.is_finite())
                .collect();
            let s = chart
                .draw_series(std::iter::once(PathElement::new(
                    line,
                    color.stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
            if text {
                s.label(format!("{label}: median, 5th–95th percentile"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
        }
        if let Some((label, points)) = &panel.points {
            let s = chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.0.is_finite() && p.1.is_finite())
                        .map(|p| Circle::new(*p, 2, BLACK.filled())),
                )
                .map_err(|e| err(&e))?;
            if text {
                s.label(label.as_str())
                    .legend(|(x, y)| Circle::new((x + 8, y), 2, BLACK.filled()));
            }
        }
        if text {
            legend_at(&mut chart, SeriesLabelPosition::UpperRight).map_err(|e| err(&e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram's legend goes to the upper corner over the lower third, and the plot is
    /// made tall enough that the peak under it stays below the legend.
    #[test]
    fn the_legend_goes_where_the_bars_are_low() {
        let left_heavy = vec![vec![5.0, 4.0, 3.0, 1.0, 0.5, 0.2], vec![1.0; 6]];
        let (corner, top) = legend_corner(&left_heavy, 6, 5.5);
        assert!(matches!(corner, SeriesLabelPosition::UpperRight));
        assert_eq!(top, 5.5);
        let right_heavy = vec![vec![0.1, 0.2, 1.0, 2.0, 4.0, 5.0]];
        let (corner, _) = legend_corner(&right_heavy, 6, 5.5);
        assert!(matches!(corner, SeriesLabelPosition::UpperLeft));
        // Both thirds as high as the whole: the plot grows so that the peak stays below the
        // legend's quarter.
        let flat = vec![vec![5.0; 6]];
        let (corner, top) = legend_corner(&flat, 6, 5.5);
        assert!(matches!(corner, SeriesLabelPosition::UpperRight));
        assert!((top - 5.0 / 0.72).abs() < 1e-12, "{top}");
    }
}
