//! PNG charts for training and evaluation reports: line charts (learning curves: one line per
//! series, markers, legend, axis labels, title) and confusion-matrix heat maps (a cell per
//! true/predicted class pair, shaded by count, the count written in it, class labels on both
//! axes, a colour bar). Everything is drawn with `plotters`' bitmap backend into an RGB buffer
//! and written with the `png` encoder. Text is set in Open Sans Regular (Apache-2.0,
//! `assets/OpenSans-Regular.ttf`, licence beside it), embedded in the binary and registered
//! with plotters' pure-Rust `ab_glyph` renderer, so no system font, fontconfig or freetype is
//! touched and the pictures are the same on every machine.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

/// Pixel size (width, height) of every chart [`line_chart`] (and so [`learning_curves`])
/// writes.
pub const LINE_CHART_SIZE: (u32, u32) = (800, 500);

/// The font family plotters resolves every text style to. Registered under plotters' own
/// default name so that no default style of the library can ask for an unregistered font.
const FAMILY: &str = "sans-serif";
/// Open Sans Regular 1.10 (Debian `fonts-open-sans`), Apache-2.0.
static FONT: &[u8] = include_bytes!("../assets/OpenSans-Regular.ttf");

/// Line colours, picked in order and repeated after the last (a colour-blind-friendly set).
const SERIES_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// A curve with at most this many points also gets a marker on each point.
const MAX_MARKED_POINTS: usize = 60;

/// Heat-map margins around the square of cells, in pixels: title above, class labels and
/// the "true class" description to the left, predicted-class labels and description below,
/// the colour bar and its labels to the right.
const HEAT_TOP: u32 = 64;
const HEAT_LEFT: u32 = 190;
const HEAT_BOTTOM: u32 = 130;
const HEAT_RIGHT: u32 = 120;
/// The heat map's colour map: count 0 is the first stop, the largest count the last; every
/// channel falls from stop to stop, so a larger count is never lighter in any channel.
const HEAT_STOPS: [(u8, u8, u8); 3] = [(255, 255, 255), (107, 174, 214), (8, 48, 107)];
const TEXT: RGBColor = RGBColor(25, 25, 25);

/// One line of a [`line_chart`]: a legend name and (x, y) points, drawn in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The name shown in the legend.
    pub name: String,
    /// The points, joined in this order.
    pub points: Vec<(f64, f64)>,
}

/// One epoch's numbers, as the trainer reports them to [`learning_curves`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    /// The epoch number (the x coordinate).
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation loss after the epoch, when there is a validation set.
    pub valid_loss: Option<f64>,
    /// Training accuracy in [0, 1], for classifiers.
    pub train_accuracy: Option<f64>,
    /// Validation accuracy in [0, 1], for classifiers with a validation set.
    pub valid_accuracy: Option<f64>,
}

/// Why a chart could not be written. Every variant names the file (or, for
/// [`learning_curves`], the folder) it was for.
#[derive(Debug)]
pub enum PlotError {
    /// Nothing to draw: no curves, a curve without points, no class labels, no epochs.
    Empty {
        /// The chart's file (or folder).
        path: PathBuf,
        /// What was missing, e.g. `curve "train" has no points`.
        what: String,
    },
    /// A value that is NaN or infinite.
    NotFinite {
        /// The chart's file.
        path: PathBuf,
        /// Which value, e.g. `curve "train" point 3 y`.
        what: String,
        /// The value itself.
        value: f64,
    },
    /// The confusion matrix has a different number of rows than class labels.
    LabelCount {
        /// The chart's file.
        path: PathBuf,
        /// Number of class labels given.
        labels: usize,
        /// Number of matrix rows given.
        rows: usize,
    },
    /// A confusion-matrix row whose length is not the number of class labels.
    Ragged {
        /// The chart's file.
        path: PathBuf,
        /// The row (true class index).
        row: usize,
        /// The row's length.
        len: usize,
        /// The expected length (the number of class labels).
        expected: usize,
    },
    /// The embedded font could not be parsed (a broken build, not a user error).
    Font {
        /// The chart's file.
        path: PathBuf,
    },
    /// plotters failed while drawing.
    Draw {
        /// The chart's file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// PNG encoding failed.
    Encode {
        /// The chart's file.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
    /// Creating the folder or writing the file failed.
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { path, what } => {
                write!(f, "{}: nothing to plot: {what}", path.display())
            }
            Self::NotFinite { path, what, value } => write!(
                f,
                "{}: {what} is {value}, expected a finite number",
                path.display()
            ),
            Self::LabelCount { path, labels, rows } => write!(
                f,
                "{}: {labels} class labels but the confusion matrix has {rows} rows, expected one \
                 row per label",
                path.display()
            ),
            Self::Ragged {
                path,
                row,
                len,
                expected,
            } => write!(
                f,
                "{}: confusion matrix row {row} has {len} counts, expected {expected} (one per \
                 class label)",
                path.display()
            ),
            Self::Font { path } => write!(
                f,
                "{}: the embedded chart font could not be loaded",
                path.display()
            ),
            Self::Draw { path, message } => {
                write!(f, "{}: drawing failed: {message}", path.display())
            }
            Self::Encode { path, source } => {
                write!(f, "{}: PNG encoding failed: {source}", path.display())
            }
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PlotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode { source, .. } => Some(source),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The drawing area every chart is drawn on, and the error its operations return.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

/// A line chart of `curves` (one line per curve in its own colour, with a legend; markers on
/// the points of curves with at most 60 points), axis descriptions `x_label` and `y_label`,
/// and `title` above, written as an RGB PNG of [`LINE_CHART_SIZE`] to `path` (the parent
/// folder must exist). The axes span the data (y with 5% headroom); when every x is a whole
/// number, the x ticks are whole numbers. The legend goes to the corner with the fewest points.
///
/// # Errors
/// [`PlotError::Empty`] without curves or with a curve without points,
/// [`PlotError::NotFinite`] for a NaN or infinite coordinate, [`PlotError::Io`] when the file
/// cannot be written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve],
) -> Result<(), PlotError> {
    if curves.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "no curves".into(),
        });
    }
    for curve in curves {
        if curve.points.is_empty() {
            return Err(PlotError::Empty {
                path: path.to_path_buf(),
                what: format!("curve {:?} has no points", curve.name),
            });
        }
        for (i, &(x, y)) in curve.points.iter().enumerate() {
            for (axis, value) in [("x", x), ("y", y)] {
                if !value.is_finite() {
                    return Err(PlotError::NotFinite {
                        path: path.to_path_buf(),
                        what: format!("curve {:?} point {i} {axis}", curve.name),
                        value,
                    });
                }
            }
        }
    }
    let points = || curves.iter().flat_map(|c| c.points.iter().copied());
    let (x_lo, x_hi) = span(points().map(|p| p.0), 0.0);
    let (y_lo, y_hi) = span(points().map(|p| p.1), 0.05);
    let whole_x = points().all(|p| p.0.fract() == 0.0);
    // Whole-number x values: at most one tick per whole number, so plotters' tick search
    // never picks a fractional step.
    let x_ticks = if whole_x {
        ((x_hi - x_lo).round() as usize + 1).clamp(2, 11)
    } else {
        11
    };
    let legend_at = legend_corner(points(), (x_lo, x_hi), (y_lo, y_hi));

    render(path, LINE_CHART_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 26).into_font().color(&TEXT))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(78)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
        let whole = |v: &f64| format!("{v:.0}");
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 15).into_font().color(&TEXT))
            .axis_desc_style((FAMILY, 17).into_font().color(&TEXT))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .x_labels(x_ticks)
            .y_labels(9);
        if whole_x {
            mesh.x_label_formatter(&whole);
        }
        mesh.draw()?;
        for (i, curve) in curves.iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(curve.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
                });
            if curve.points.len() <= MAX_MARKED_POINTS {
                chart.draw_series(
                    curve
                        .points
                        .iter()
                        .map(|&p| Circle::new(p, 3, colour.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .margin(12)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .label_font((FAMILY, 15).into_font().color(&TEXT))
            .draw()?;
        Ok(())
    })
}

/// Pixel size (width, height) of the PNG [`heatmap`] writes for `classes` classes: square
/// cells of `clamp(600 / classes, 18, 96)` pixels plus fixed margins for the title, the
/// labels and the colour bar.
pub fn heatmap_size(classes: usize) -> (u32, u32) {
    let side = heat_cell(classes) * classes as u32;
    (
        HEAT_LEFT + side + HEAT_RIGHT,
        HEAT_TOP + side + HEAT_BOTTOM,
    )
}

/// Side of one heat-map cell in pixels for `classes` classes.
fn heat_cell(classes: usize) -> u32 {
    (600 / classes.max(1) as u32).clamp(18, 96)
}

/// The heat-map colour of a count that is `t` (in [0, 1]) of the largest count: white at 0,
/// through mid blue to dark blue at 1, as `[red, green, blue]`; every channel is
/// non-increasing in `t`, so a larger count is never lighter. NaN counts as 0.
pub fn heat_colour(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let scaled = t * (HEAT_STOPS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(HEAT_STOPS.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (HEAT_STOPS[i], HEAT_STOPS[i + 1]);
    let mix = |p: u8, q: u8| (f64::from(p) + (f64::from(q) - f64::from(p)) * f).round() as u8;
    [mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2)]
}

/// [`heat_colour`] as a plotters colour.
fn heat_rgb(t: f64) -> RGBColor {
    let [r, g, b] = heat_colour(t);
    RGBColor(r, g, b)
}

/// A heat map of `matrix` (rows = true class, columns = predicted class, as a confusion
/// matrix) written as an RGB PNG of [`heatmap_size`]`(labels.len())` to `path` (the parent
/// folder must exist): row 0 at the top, column 0 at the left, each cell shaded with
/// [`heat_colour`]`(count / largest count)` and its count written in it (white on dark
/// cells), `labels` on both axes (cut with "…" when too long; the column labels turn
/// vertical when they do not fit across a cell), a colour bar from 0 to the largest count,
/// and `title` above.
///
/// # Errors
/// [`PlotError::Empty`] without labels, [`PlotError::LabelCount`] when the matrix does not
/// have one row per label, [`PlotError::Ragged`] for a row without one count per label,
/// [`PlotError::Io`] when the file cannot be written.
pub fn heatmap(
    path: &Path,
    title: &str,
    labels: &[String],
    matrix: &[Vec<u64>],
) -> Result<(), PlotError> {
    let n = labels.len();
    if n == 0 {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "no class labels".into(),
        });
    }
    if matrix.len() != n {
        return Err(PlotError::LabelCount {
            path: path.to_path_buf(),
            labels: n,
            rows: matrix.len(),
        });
    }
    if let Some((row, r)) = matrix.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(PlotError::Ragged {
            path: path.to_path_buf(),
            row,
            len: r.len(),
            expected: n,
        });
    }
    let max = matrix.iter().flatten().copied().max().unwrap_or(0);
    let size = heatmap_size(n);
    let cell = heat_cell(n) as i32;
    let side = cell * n as i32;
    let (left, top) = (HEAT_LEFT as i32, HEAT_TOP as i32);

    render(path, size, |root| {
        let title_style = (FAMILY, 24).into_font().color(&TEXT);
        let title = fit(root, title, &title_style, size.0 - 20)?;
        root.draw_text(
            &title,
            &title_style.pos(Pos::new(HPos::Center, VPos::Center)),
            (size.0 as i32 / 2, top / 2),
        )?;

        // The cells, their counts and a thin white grid.
        let cells = root.clone().shrink((left, top), (side, side));
        let count_size = count_font_size(&cells, max, cell)?;
        for (i, row) in matrix.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                let t = if max == 0 {
                    0.0
                } else {
                    count as f64 / max as f64
                };
                let (x, y) = (j as i32 * cell, i as i32 * cell);
                cells.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    heat_rgb(t).filled(),
                ))?;
                cells.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    WHITE.stroke_width(1),
                ))?;
                let ink = if t > 0.5 { WHITE } else { TEXT };
                let style = (FAMILY, count_size)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                cells.draw_text(&count.to_string(), &style, (x + cell / 2, y + cell / 2))?;
            }
        }

        // Class labels: rows right-aligned left of the cells, columns below them.
        let label_size = (f64::from(cell as u32) * 0.42).clamp(10.0, 16.0);
        let label_style = (FAMILY, label_size).into_font().color(&TEXT);
        for (i, label) in labels.iter().enumerate() {
            let text = fit(root, label, &label_style, HEAT_LEFT - 50)?;
            root.draw_text(
                &text,
                &label_style.pos(Pos::new(HPos::Right, VPos::Center)),
                (left - 8, top + i as i32 * cell + cell / 2),
            )?;
        }
        let widest = labels
            .iter()
            .map(|l| root.estimate_text_size(l, &label_style).map(|s| s.0))
            .try_fold(0, |m, w| w.map(|w| m.max(w)))?;
        let across = widest + 6 <= cell as u32;
        for (j, label) in labels.iter().enumerate() {
            let x = left + j as i32 * cell + cell / 2;
            if across {
                root.draw_text(
                    label,
                    &label_style.pos(Pos::new(HPos::Center, VPos::Top)),
                    (x, top + side + 8),
                )?;
            } else {
                let text = fit(root, label, &label_style, HEAT_BOTTOM - 44)?;
                let down = label_style
                    .transform(FontTransform::Rotate90)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                root.draw_text(&text, &down, (x, top + side + 8))?;
            }
        }

        // Axis descriptions.
        let desc_style = (FAMILY, 17).into_font().color(&TEXT);
        root.draw_text(
            "predicted class",
            &desc_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
            (left + side / 2, size.1 as i32 - 12),
        )?;
        root.draw_text(
            "true class",
            &desc_style
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Center)),
            (20, top + side / 2),
        )?;

        // Colour bar: the largest count at the top, 0 at the bottom.
        let bar_x = left + side + 24;
        let bar = root.clone().shrink((bar_x, top), (18, side));
        for k in 0..side {
            let t = 1.0 - f64::from(k) / f64::from((side - 1).max(1));
            bar.draw(&Rectangle::new([(0, k), (18, k + 1)], heat_rgb(t).filled()))?;
        }
        bar.draw(&Rectangle::new(
            [(0, 0), (17, side - 1)],
            RGBColor(160, 160, 160).stroke_width(1),
        ))?;
        let tick_style = (FAMILY, 14).into_font().color(&TEXT);
        for (value, y) in [(max, top), (0, top + side)] {
            root.draw_text(
                &value.to_string(),
                &tick_style.pos(Pos::new(HPos::Left, VPos::Center)),
                (bar_x + 24, y),
            )?;
        }
        Ok(())
    })
}

/// Learning curves as the trainer calls them: creates `dir` and writes `dir/loss.png`
/// (train loss per epoch, and validation loss where given) and, when any epoch has an
/// accuracy, `dir/accuracy.png` (train and validation accuracy where given), both with
/// [`line_chart`]. Returns the paths written, loss first.
///
/// # Errors
/// [`PlotError::Empty`] without epochs, [`PlotError::Io`] when `dir` cannot be created, and
/// [`line_chart`]'s errors (a NaN loss is [`PlotError::NotFinite`] naming the file, curve
/// and point).
pub fn learning_curves(dir: &Path, epochs: &[EpochPoint]) -> Result<Vec<PathBuf>, PlotError> {
    if epochs.is_empty() {
        return Err(PlotError::Empty {
            path: dir.to_path_buf(),
            what: "no epochs".into(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let curves = |named: [(&str, fn(&EpochPoint) -> Option<f64>); 2]| -> Vec<Curve> {
        named
            .into_iter()
            .map(|(name, value)| Curve {
                name: name.to_string(),
                points: epochs
                    .iter()
                    .filter_map(|e| value(e).map(|v| (e.epoch as f64, v)))
                    .collect(),
            })
            .filter(|c| !c.points.is_empty())
            .collect()
    };
    let mut written = Vec::new();
    let loss = dir.join("loss.png");
    line_chart(
        &loss,
        "Loss per epoch",
        "epoch",
        "loss",
        &curves([
            ("train", |e| Some(e.train_loss)),
            ("validation", |e| e.valid_loss),
        ]),
    )?;
    written.push(loss);
    let accuracy = curves([
        ("train", |e| e.train_accuracy),
        ("validation", |e| e.valid_accuracy),
    ]);
    if !accuracy.is_empty() {
        let path = dir.join("accuracy.png");
        line_chart(&path, "Accuracy per epoch", "epoch", "accuracy", &accuracy)?;
        written.push(path);
    }
    Ok(written)
}

/// Registers the embedded font with plotters (once per process).
fn register_embedded_font(path: &Path) -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(PlotError::Font {
            path: path.to_path_buf(),
        })
    }
}

/// Draws with `draw` on a white RGB canvas of `size` and writes it to `path` as PNG.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), DrawError>,
) -> Result<(), PlotError> {
    register_embedded_font(path)?;
    let drawing = |e: DrawError| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    let encoding = |source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(encoding)?;
    writer.write_image_data(&rgb).map_err(encoding)?;
    writer.finish().map_err(encoding)?;
    fs::write(path, bytes).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The axis range of `values` with `headroom` (a fraction of the span) on both sides; a
/// single value gets ±10% of itself (±0.5 around 0) so the axis is never empty.
fn span(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        let pad = (hi - lo) * headroom;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 0.5 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// The legend corner whose quarter-by-third of the plot holds the fewest points (upper right
/// first on ties).
fn legend_corner(
    points: impl Iterator<Item = (f64, f64)>,
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> SeriesLabelPosition {
    // Corners as (right?, upper?), in order of preference.
    let corners = [(true, true), (true, false), (false, true), (false, false)];
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let fx = (x - x_lo) / (x_hi - x_lo);
        let fy = (y - y_lo) / (y_hi - y_lo);
        for (count, &(right, upper)) in counts.iter_mut().zip(&corners) {
            let in_x = if right { fx >= 0.6 } else { fx <= 0.4 };
            let in_y = if upper { fy >= 0.65 } else { fy <= 0.35 };
            *count += usize::from(in_x && in_y);
        }
    }
    let best = (0..4).min_by_key(|&k| (counts[k], k)).unwrap_or(0);
    match corners[best] {
        (true, true) => SeriesLabelPosition::UpperRight,
        (true, false) => SeriesLabelPosition::LowerRight,
        (false, true) => SeriesLabelPosition::UpperLeft,
        (false, false) => SeriesLabelPosition::LowerLeft,
    }
}

/// The count font size for heat-map cells of `cell` pixels: at most 18 px and 40% of the
/// cell, smaller while the largest count does not fit across the cell.
fn count_font_size(area: &Area<'_>, max: u64, cell: i32) -> Result<f64, DrawError> {
    let text = max.to_string();
    let mut size = (f64::from(cell) * 0.4).min(18.0);
    while size > 7.0 {
        let (w, _) = area.estimate_text_size(&text, &TextStyle::from((FAMILY, size).into_font()))?;
        if w as i32 + 4 <= cell {
            break;
        }
        size -= 1.0;
    }
    Ok(size)
}

/// `text`, cut and ended with "…" when it is wider than `max_width` pixels in `style`.
fn fit(
    area: &Area<'_>,
    text: &str,
    style: &TextStyle<'_>,
    max_width: u32,
) -> Result<String, DrawError> {
    if area.estimate_text_size(text, style)?.0 <= max_width {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let cut: String = chars[..keep].iter().chain(['…'].iter()).collect();
        if area.estimate_text_size(&cut, style)?.0 <= max_width {
            return Ok(cut);
        }
    }
    Ok("…".to_string())
}
