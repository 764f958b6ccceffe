//! Miss ratio against capacity, one line per policy (SVG or PNG).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

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
    let size = (960, 600);
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

fn draw<DB: DrawingBackend>(
    report: &BenchReport,
    path: &Path,
    area: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    area.fill(&WHITE).map_err(|e| err(&e))?;
    let mut policies: Vec<&str> = Vec::new();
    for row in &report.rows {
        if !policies.contains(&row.policy.as_str()) {
            policies.push(&row.policy);
        }
    }
    let xs: Vec<f64> = report
        .rows
        .iter()
        .map(|r| r.capacity_fraction * 100.0)
        .collect();
    let (x_min, x_max) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let y_max = report
        .rows
        .iter()
        .map(|r| r.miss_ratio)
        .fold(0.0f64, f64::max)
        .max(0.05);
    let (x_lo, x_hi) = if x_min < x_max {
        (x_min * 0.8, x_max * 1.25)
    } else {
        (x_min * 0.5, x_max * 2.0)
    };
    let mut chart = ChartBuilder::on(&area)
        .caption(
            format!("miss ratio vs capacity: {}", report.trace),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..(y_max * 1.08))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(format!("capacity (% of distinct {})", report.mode))
        .y_desc("miss ratio")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, policy) in policies.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut points: Vec<(f64, f64)> = report
            .rows
            .iter()
            .filter(|r| r.policy == *policy)
            .map(|r| (r.capacity_fraction * 100.0, r.miss_ratio))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = if *policy == super::BELADY {
            ShapeStyle::from(&BLACK).stroke_width(2)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| err(&e))?
            .label(policy.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, style.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    area.present().map_err(|e| err(&e))?;
    Ok(())
}
