//! Miss ratio against capacity, one line per policy (SVG or PNG).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::BenchReport;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot file {} must end in .svg or .png", .0.display())]
    Extension(PathBuf),
    #[error(
        "cannot draw the plot {}: plots need a TrueType font to lay out their labels and none \
         was found (looked for {looked_for}); install fonts-dejavu-core", path.display()
    )]
    NoFont { path: PathBuf, looked_for: String },
    #[error("cannot write the plot {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot draw the plot {}: {reason}", path.display())]
    Draw { path: PathBuf, reason: String },
}

/// System fonts tried for label layout (both backends measure text with it).
const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font(path: &Path) -> Result<(), PlotError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        FONT_CANDIDATES.iter().any(|path| {
            std::fs::read(path).ok().is_some_and(|bytes| {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::NoFont {
            path: path.to_owned(),
            looked_for: FONT_CANDIDATES.join(", "),
        })
    }
}

/// Whether a plot can be written to `path`, checked before a run of minutes
/// whose plot would otherwise be lost at its very end: the name, a font, and
/// a file that can be created there (removed again if it was not there).
pub fn check_plot_path(path: &Path) -> Result<(), PlotError> {
    let extension = path.extension().and_then(|e| e.to_str());
    if !matches!(extension, Some("svg" | "png")) {
        return Err(PlotError::Extension(path.to_owned()));
    }
    register_font(path)?;
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|error| PlotError::Write {
            path: path.to_owned(),
            error,
        })?;
    if !existed {
        // Only a probe: no plot is better than an empty one if the run fails.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

pub fn write_plot(report: &BenchReport, path: &Path) -> Result<(), PlotError> {
    let size = (1100, 620);
    check_plot_path(path)?;
    if path.extension().is_some_and(|e| e == "svg") {
        draw(
            report,
            path,
            SVGBackend::new(path, size).into_drawing_area(),
        )
    } else {
        draw(
            report,
            path,
            BitMapBackend::new(path, size).into_drawing_area(),
        )
    }
}

/// Dark enough to read as a thin line on white, and far apart from each other.
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(110, 110, 110),
    RGBColor(160, 160, 20),
    RGBColor(23, 170, 190),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
];

/// Markers that tell two lines of one colour apart once the palette repeats.
#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Cross,
}

/// One policy's line: its colour and marker follow its place in the report
/// (the same policy looks the same in every plot of one set of policies).
struct Line<'a> {
    policy: &'a str,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
    marker: Marker,
}

impl Line<'_> {
    /// The miss ratio at the largest capacity the policy ran at: what the
    /// legend sorts by and shows.
    fn last_miss_ratio(&self) -> f64 {
        self.points.last().map_or(f64::MAX, |p| p.1)
    }
}

fn lines(report: &BenchReport) -> Vec<Line<'_>> {
    let mut lines: Vec<Line<'_>> = Vec::new();
    for row in &report.rows {
        let point = (row.capacity_fraction * 100.0, row.miss_ratio);
        if let Some(line) = lines.iter_mut().find(|l| l.policy == row.policy) {
            line.points.push(point);
            continue;
        }
        let i = lines.len();
        let (style, marker) = if row.policy == super::BELADY {
            (BLACK.stroke_width(3), Marker::Circle)
        } else {
            let shape = match (i + i / PALETTE.len()) % 3 {
                0 => Marker::Circle,
                1 => Marker::Triangle,
                _ => Marker::Cross,
            };
            (PALETTE[i % PALETTE.len()].stroke_width(2), shape)
        };
        lines.push(Line {
            policy: &row.policy,
            points: vec![point],
            style,
            marker,
        });
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // Best first, so the legend reads as a ranking at the largest capacity.
    lines.sort_by(|a, b| {
        a.last_miss_ratio()
            .total_cmp(&b.last_miss_ratio())
            .then_with(|| a.policy.cmp(b.policy))
    });
    lines
}

/// `10%`, `2.5%`, `0.05%`: a capacity as its share, to two significant
/// digits when that is within 0.5 % of it (1 % of 80,749 objects, 807, is
/// `1%`, not `0.999%`), else to three (`12.5%`), without trailing zeros.
fn percent_label(percent: f64) -> String {
    let magnitude = percent.abs().log10().floor();
    if !magnitude.is_finite() {
        return format!("{percent}%");
    }
    let rounded = |digits: f64| {
        let decimals = (digits - 1.0 - magnitude).clamp(0.0, 8.0) as usize;
        let text = format!("{percent:.decimals$}");
        let value: f64 = text.parse().unwrap_or(percent);
        (text, value)
    };
    let (short, value) = rounded(2.0);
    let text = if (value - percent).abs() <= percent.abs() * 0.005 {
        short
    } else {
        rounded(3.0).0
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}%")
}

/// The miss ratios shown: the data's range with a margin, not 0 to 1, so that
/// policies a few points apart do not draw one line.
fn miss_ratio_range(lines: &[Line<'_>]) -> (f64, f64) {
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let margin = ((hi - lo) * 0.08).max(0.01);
    ((lo - margin).max(0.0), (hi + margin).min(1.0))
}

fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    at: (i32, i32),
    line: &Line<'_>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let filled = line.style.filled();
    match line.marker {
        Marker::Circle => area.draw(&Circle::new(at, 4, filled)),
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 5, filled)),
        Marker::Cross => area.draw(&Cross::new(at, 4, line.style)),
    }
}

fn draw<DB: DrawingBackend>(
    report: &BenchReport,
    path: &Path,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let area = root
        .titled(
            &format!("miss ratio vs capacity: {}", report.trace),
            ("sans-serif", 22),
        )
        .map_err(|e| err(&e))?;
    // The legend gets a column of its own: drawn over the chart, it hid the
    // lines where they differ most, at the largest capacity.
    let (chart_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND_WIDTH);
    let lines = lines(report);
    let mut capacities: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    capacities.sort_by(f64::total_cmp);
    capacities.dedup_by(|a, b| (*a - *b).abs() <= b.abs() * 1e-9);
    let (x_min, x_max) = match (capacities.first(), capacities.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => (1.0, 1.0),
    };
    let (x_lo, x_hi) = if x_min < x_max {
        (x_min * 0.8, x_max * 1.25)
    } else {
        (x_min * 0.5, x_max * 2.0)
    };
    let (y_lo, y_hi) = miss_ratio_range(&lines);
    let y_decimals = if y_hi - y_lo < 0.1 { 3 } else { 2 };
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale().with_key_points(capacities),
            y_lo..y_hi,
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(if report.mode == "bytes" {
            "capacity (% of the unique bytes)"
        } else {
            "capacity (% of the distinct objects)"
        })
        .y_desc("miss ratio")
        .x_label_formatter(&|x| percent_label(*x))
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .draw()
        .map_err(|e| err(&e))?;
    for line in &lines {
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), line.style))
            .map_err(|e| err(&e))?;
        let plotting = chart.plotting_area();
        for &point in &line.points {
            let at = plotting.map_coordinate(&point);
            draw_marker(&root, at, line).map_err(|e| err(&e))?;
        }
    }
    draw_legend(&legend_area, &lines).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

const LEGEND_WIDTH: u32 = 250;

/// Policies best first, each with its miss ratio at the largest capacity.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lines: &[Line<'_>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, height) = area.dim_in_pixel();
    let top = 24;
    area.draw(&Text::new(
        "miss ratio at the largest capacity",
        (8, 8),
        ("sans-serif", 13).into_font().color(&BLACK),
    ))?;
    let fitting = (height.saturating_sub(top as u32 + 24) / lines.len().max(1) as u32) as i32;
    let row = fitting.clamp(10, 22);
    let font_size = (row - 6).clamp(9, 15);
    let right = ("sans-serif", font_size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let left = ("sans-serif", font_size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, line) in lines.iter().enumerate() {
        let y = top + row / 2 + 8 + i as i32 * row;
        area.draw(&PathElement::new(vec![(8, y), (36, y)], line.style))?;
        draw_marker(area, (22, y), line)?;
        area.draw(&Text::new(line.policy.to_owned(), (44, y), left.clone()))?;
        area.draw(&Text::new(
            format!("{:.4}", line.last_miss_ratio()),
            (width as i32 - 12, y),
            right.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_ticks_read_as_percentages_without_trailing_zeros() {
        let labels: Vec<String> = [20.0, 12.5, 10.0, 9.9992, 2.5, 1.0, 0.9994, 0.5, 0.05]
            .into_iter()
            .map(percent_label)
            .collect();
        assert_eq!(
            labels,
            ["20%", "12.5%", "10%", "10%", "2.5%", "1%", "1%", "0.5%", "0.05%"]
        );
    }
}
