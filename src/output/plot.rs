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

/// One group of bars: a title and, per category, bars (label, value, half-width or NaN).
pub struct BarPanel {
    pub title: String,
    pub categories: Vec<String>,
    /// `bars[c]`: the bars of category c, the same series in every category.
    pub bars: Vec<Vec<(String, f64, f64)>>,
}

const SERIES: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Grouped bar charts with error bars, one panel per [`BarPanel`], stacked vertically.
pub fn bar_panels(path: &Path, panels: &[BarPanel]) -> Result<(), String> {
    let text = font_available();
    if !text {
        eprintln!(
            "warning: no TrueType font found (set VPOP_FONT=/path/to/font.ttf): {} has no labels",
            path.display()
        );
    }
    let height = (320 * panels.len().max(1)) as u32;
    // Drawn under a temporary name (the encoder goes by the extension), then renamed.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{}.tmp.png", name.trim_end_matches(".png")));
    draw(&tmp, path, panels, text, height)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(
    tmp: &Path,
    path: &Path,
    panels: &[BarPanel],
    text: bool,
    height: u32,
) -> Result<(), String> {
    let root = BitMapBackend::new(tmp, (960, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(areas) {
        let nc = panel.categories.len().max(1);
        let ns = panel.bars.first().map_or(1, |b| b.len().max(1));
        let hi = panel
            .bars
            .iter()
            .flatten()
            .map(|(_, v, c)| v + if c.is_finite() { *c } else { 0.0 })
            .fold(0.0f64, f64::max)
            .max(1e-12)
            * 1.1;
        let lo = panel
            .bars
            .iter()
            .flatten()
            .map(|(_, v, c)| v - if c.is_finite() { *c } else { 0.0 })
            .fold(0.0f64, f64::min)
            * 1.1;
        let mut builder = ChartBuilder::on(&area);
        builder.margin(12);
        if text {
            builder
                .caption(&panel.title, ("sans-serif", 18))
                .x_label_area_size(28)
                .y_label_area_size(48);
        }
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
                let color = SERIES[s % SERIES.len()];
                let x0 = c as f64 + 0.1 + s as f64 * width;
                let x1 = x0 + width * 0.9;
                let bar = Rectangle::new([(x0, 0.0), (x1, *v)], color.filled());
                let series = chart
                    .draw_series(std::iter::once(bar))
                    .map_err(|e| err(&e))?;
                if c == 0 && text {
                    series.label(label.clone()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
                }
                if ci.is_finite() {
                    let xm = 0.5 * (x0 + x1);
                    let whisker = PathElement::new(vec![(xm, v - ci), (xm, v + ci)], BLACK);
                    chart
                        .draw_series(std::iter::once(whisker))
                        .map_err(|e| err(&e))?;
                }
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
