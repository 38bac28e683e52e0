//! PNG charts for training and evaluation reports: line charts (learning curves: one line per
//! series, markers, legend, axis labels, title) and confusion-matrix heat maps (a cell per
//! true/predicted class pair, shaded by count, the count written in it, class labels on both
//! axes, a colour bar). Shapes (axes, grid, lines, markers, cells) are drawn with `plotters`'
//! bitmap backend into an RGB buffer; text is then set into the same buffer with `ab_glyph`
//! in Open Sans Regular (Apache-2.0, `assets/OpenSans-Regular.ttf`, licence beside it), which
//! is embedded in the binary, so no system font, fontconfig or freetype is touched and the
//! pictures are the same on every machine; the `png` encoder writes the file. plotters draws
//! no text at all (its `ab_glyph` text drops each glyph's side bearing — "class" came out as
//! "dass" — and its other text features load system fonts), so it is built without font
//! features and the grid, ticks and legend are drawn here.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// Pixel size (width, height) of every chart [`line_chart`] (and so [`learning_curves`])
/// writes.
pub const LINE_CHART_SIZE: (u32, u32) = (800, 500);

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
const TEXT: RGBColor = RGBColor(25, 25, 25);
const GRID: RGBColor = RGBColor(225, 225, 225);
const FRAME: RGBColor = RGBColor(160, 160, 160);
/// Font sizes in pixels (ab_glyph's scale: ascent to descent).
const TITLE_SIZE: f32 = 26.0;
const DESC_SIZE: f32 = 18.0;
const TICK_SIZE: f32 = 16.0;

/// Heat-map margins around the square of cells, in pixels: title above, class labels and
/// the "true class" description to the left, predicted-class labels and description below,
/// the colour bar and its labels to the right.
const HEAT_TOP: u32 = 64;
const HEAT_LEFT: u32 = 190;
const HEAT_BOTTOM: u32 = 120;
const HEAT_RIGHT: u32 = 120;
/// The most classes [`heatmap`] draws: 256 classes of 18-pixel cells are a 4918 × 4848
/// picture (72 MB of RGB while drawing); beyond that the labels and counts are unreadable.
pub const MAX_HEATMAP_CLASSES: usize = 256;
/// The heat map's colour map: count 0 is the first stop, the largest count the last; every
/// channel falls from stop to stop, so a larger count is never lighter in any channel.
const HEAT_STOPS: [(u8, u8, u8); 3] = [(255, 255, 255), (107, 174, 214), (8, 48, 107)];

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
    /// More classes than [`MAX_HEATMAP_CLASSES`].
    TooManyClasses {
        /// The chart's file.
        path: PathBuf,
        /// Number of class labels given.
        classes: usize,
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
            Self::TooManyClasses { path, classes } => write!(
                f,
                "{}: {classes} classes, a heat map draws at most {MAX_HEATMAP_CLASSES}",
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
/// folder must exist). The axes span the data (x with 2%, y with 5% headroom) with ticks at
/// multiples of 1, 2 or 5 × 10^k; when every x is a whole number, so is every x tick. The
/// legend goes to the corner of the plot with the fewest points.
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
    let (x_lo, x_hi) = span(points().map(|p| p.0), 0.02);
    let (y_lo, y_hi) = span(points().map(|p| p.1), 0.05);
    let whole_x = points().all(|p| p.0.fract() == 0.0);
    let x_ticks = Ticks::new(x_lo, x_hi, 9, whole_x);
    let y_ticks = Ticks::new(y_lo, y_hi, 9, false);
    let corner = legend_corner(points(), (x_lo, x_hi), (y_lo, y_hi));

    render(path, LINE_CHART_SIZE, |root, text| {
        let width = LINE_CHART_SIZE.0 as i32;
        let title = text.fit(title, TITLE_SIZE, LINE_CHART_SIZE.0 - 20);
        text.put(Label::new(title, (width / 2, 14), TITLE_SIZE).anchor(HPos::Center, VPos::Top));

        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_top(56)
            .x_label_area_size(64)
            .y_label_area_size(84)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
        // Grid lines and tick marks at the ticks, the two axes, the tick labels.
        let (left, bottom) = chart.backend_coord(&(x_lo, y_lo));
        let (right, upper) = chart.backend_coord(&(x_hi, y_hi));
        let line = |from, to, colour: RGBColor| PathElement::new(vec![from, to], colour);
        for &x in &x_ticks.values {
            let (px, _) = chart.backend_coord(&(x, y_lo));
            root.draw(&line((px, upper), (px, bottom), GRID))?;
            root.draw(&line((px, bottom), (px, bottom + 5), FRAME))?;
            let label = Label::new(x_ticks.format(x), (px, bottom + 9), TICK_SIZE);
            text.put(label.anchor(HPos::Center, VPos::Top));
        }
        let mut widest = 0.0f32;
        for &y in &y_ticks.values {
            let (_, py) = chart.backend_coord(&(x_lo, y));
            root.draw(&line((left, py), (right, py), GRID))?;
            root.draw(&line((left - 5, py), (left, py), FRAME))?;
            let tick = y_ticks.format(y);
            widest = widest.max(text.width(&tick, TICK_SIZE));
            let label = Label::new(tick, (left - 9, py), TICK_SIZE);
            text.put(label.anchor(HPos::Right, VPos::Center));
        }
        root.draw(&line((left, upper), (left, bottom), FRAME))?;
        root.draw(&line((left, bottom), (right, bottom), FRAME))?;
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let x_desc = Label::new(x_label, ((xs.start + xs.end) / 2, ys.end + 36), DESC_SIZE);
        text.put(x_desc.anchor(HPos::Center, VPos::Top));
        let left_of_ticks = xs.start - 9 - widest.ceil() as i32 - 12 - DESC_SIZE as i32 / 2;
        let y_desc = Label::new(
            y_label,
            (left_of_ticks.max(12), (ys.start + ys.end) / 2),
            DESC_SIZE,
        );
        text.put(y_desc.anchor(HPos::Center, VPos::Center).turned(Turn::Up));

        for (i, curve) in curves.iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            chart.draw_series(LineSeries::new(
                curve.points.iter().copied(),
                colour.stroke_width(2),
            ))?;
            if curve.points.len() <= MAX_MARKED_POINTS {
                let markers = curve
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, colour.filled()));
                chart.draw_series(markers)?;
            }
        }

        // The legend: a framed box in `corner`, a line sample and the name per curve.
        let names: Vec<String> = curves
            .iter()
            .map(|c| text.fit(&c.name, TICK_SIZE, 240))
            .collect();
        let name_width = names
            .iter()
            .map(|n| text.width(n, TICK_SIZE))
            .fold(0.0, f32::max);
        let (box_w, box_h) = (
            52 + name_width.ceil() as i32 + 12,
            10 + 22 * names.len() as i32,
        );
        let x0 = if corner.right {
            xs.end - 12 - box_w
        } else {
            xs.start + 12
        };
        let y0 = if corner.upper {
            ys.start + 12
        } else {
            ys.end - 12 - box_h
        };
        let frame = [(x0, y0), (x0 + box_w, y0 + box_h)];
        root.draw(&Rectangle::new(frame, WHITE.mix(0.9).filled()))?;
        root.draw(&Rectangle::new(frame, FRAME.stroke_width(1)))?;
        for (i, name) in names.into_iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            let y = y0 + 5 + 22 * i as i32 + 11;
            root.draw(&PathElement::new(
                vec![(x0 + 12, y), (x0 + 40, y)],
                colour.stroke_width(2),
            ))?;
            text.put(Label::new(name, (x0 + 52, y), TICK_SIZE).anchor(HPos::Left, VPos::Center));
        }
        Ok(())
    })
}

/// Pixel size (width, height) of the PNG [`heatmap`] writes for `classes` classes (at most
/// [`MAX_HEATMAP_CLASSES`]; more are counted as that many): square cells of
/// `clamp(600 / classes, 18, 96)` pixels plus fixed margins for the title, the labels and
/// the colour bar.
pub fn heatmap_size(classes: usize) -> (u32, u32) {
    let classes = classes.min(MAX_HEATMAP_CLASSES);
    let side = heat_cell(classes) * classes as u32;
    (HEAT_LEFT + side + HEAT_RIGHT, HEAT_TOP + side + HEAT_BOTTOM)
}

/// Side of one heat-map cell in pixels for `classes` classes.
fn heat_cell(classes: usize) -> u32 {
    (600 / classes.clamp(1, MAX_HEATMAP_CLASSES) as u32).clamp(18, 96)
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
/// cells), `labels` on both axes (cut with "…" when too long; the column labels turn to read
/// downwards when they do not fit across a cell), a colour bar from 0 to the largest count,
/// and `title` above.
///
/// # Errors
/// [`PlotError::Empty`] without labels, [`PlotError::TooManyClasses`] beyond
/// [`MAX_HEATMAP_CLASSES`], [`PlotError::LabelCount`] when the matrix does not
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
    if n > MAX_HEATMAP_CLASSES {
        return Err(PlotError::TooManyClasses {
            path: path.to_path_buf(),
            classes: n,
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

    render(path, size, |root, text| {
        let title = text.fit(title, TITLE_SIZE, size.0 - 20);
        let title = Label::new(title, (size.0 as i32 / 2, top / 2), TITLE_SIZE);
        text.put(title.anchor(HPos::Center, VPos::Center));

        // The cells with their counts, and a thin white grid.
        let count_size = text.shrink_to(&max.to_string(), (cell as f32 * 0.4).min(18.0), cell - 4);
        for (i, row) in matrix.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                let t = if max == 0 {
                    0.0
                } else {
                    count as f64 / max as f64
                };
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                let square = [(x, y), (x + cell, y + cell)];
                root.draw(&Rectangle::new(square, heat_rgb(t).filled()))?;
                root.draw(&Rectangle::new(square, WHITE.stroke_width(1)))?;
                let ink = if t > 0.5 { WHITE } else { TEXT };
                let label = Label::new(count.to_string(), (x + cell / 2, y + cell / 2), count_size);
                text.put(label.anchor(HPos::Center, VPos::Center).colour(ink));
            }
        }

        // Class labels: rows right-aligned left of the cells, columns below them (turned to
        // read downwards when the widest does not fit across a cell).
        let label_size = (cell as f32 * 0.42).clamp(10.0, 16.0);
        let mut widest_row = 0.0f32;
        for (i, label) in labels.iter().enumerate() {
            let label = text.fit(label, label_size, HEAT_LEFT - 56);
            widest_row = widest_row.max(text.width(&label, label_size));
            let label = Label::new(
                label,
                (left - 8, top + i as i32 * cell + cell / 2),
                label_size,
            );
            text.put(label.anchor(HPos::Right, VPos::Center));
        }
        let widest_column = labels
            .iter()
            .map(|l| text.width(l, label_size))
            .fold(0.0, f32::max);
        let across = widest_column + 6.0 <= cell as f32;
        let mut below = 0.0f32;
        for (j, label) in labels.iter().enumerate() {
            let at = (left + j as i32 * cell + cell / 2, top + side + 8);
            if across {
                below = label_size;
                text.put(Label::new(label, at, label_size).anchor(HPos::Center, VPos::Top));
            } else {
                let label = text.fit(label, label_size, HEAT_BOTTOM - 48);
                below = below.max(text.width(&label, label_size));
                let label = Label::new(label, at, label_size).anchor(HPos::Left, VPos::Center);
                text.put(label.turned(Turn::Down));
            }
        }

        // Axis descriptions, just outside the labels.
        let below_labels = top + side + 8 + below.ceil() as i32 + 10;
        let x_desc = Label::new(
            "predicted class",
            (left + side / 2, below_labels),
            DESC_SIZE,
        );
        text.put(x_desc.anchor(HPos::Center, VPos::Top));
        let left_of_labels = left - 8 - widest_row.ceil() as i32 - 12 - DESC_SIZE as i32 / 2;
        let y_desc = Label::new(
            "true class",
            (left_of_labels.max(12), top + side / 2),
            DESC_SIZE,
        );
        text.put(y_desc.anchor(HPos::Center, VPos::Center).turned(Turn::Up));

        // Colour bar: the largest count at the top, 0 at the bottom.
        let bar_x = left + side + 24;
        for k in 0..side {
            let t = 1.0 - f64::from(k) / f64::from((side - 1).max(1));
            let strip = [(bar_x, top + k), (bar_x + 18, top + k + 1)];
            root.draw(&Rectangle::new(strip, heat_rgb(t).filled()))?;
        }
        let frame = [(bar_x, top), (bar_x + 17, top + side - 1)];
        root.draw(&Rectangle::new(frame, FRAME.stroke_width(1)))?;
        for (value, y) in [(max, top), (0, top + side)] {
            let tick = Label::new(value.to_string(), (bar_x + 24, y), TICK_SIZE);
            text.put(tick.anchor(HPos::Left, VPos::Center));
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
    let curves = |named: [(&str, EpochValue); 2]| -> Vec<Curve> {
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

/// One number of an epoch, if the trainer reported it.
type EpochValue = fn(&EpochPoint) -> Option<f64>;

/// The embedded font, parsed once; `None` if it does not parse (a broken build).
fn font() -> Option<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// Draws the shapes with `draw` on a white RGB canvas of `size`, sets the text it queued on
/// top, and writes the picture to `path` as PNG.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>, &mut Lettering) -> Result<(), DrawError>,
) -> Result<(), PlotError> {
    let font = match font() {
        Some(font) => font,
        None => {
            return Err(PlotError::Font {
                path: path.to_path_buf(),
            });
        }
    };
    let drawing = |e: DrawError| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut text = Lettering {
        font,
        queued: Vec::new(),
    };
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root, &mut text).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    text.set(&mut rgb, size);

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

/// Which way a [`Label`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Turn {
    /// Left to right.
    None,
    /// Top to bottom (turned a quarter clockwise).
    Down,
    /// Bottom to top (turned a quarter anticlockwise).
    Up,
}

/// One line of text to set: `at` is the anchor pixel, `h`/`v` say which point of the text's
/// box (in its own reading direction) sits there; the box is the advance width wide and
/// `size` (ascent to descent) tall.
#[derive(Clone)]
struct Label {
    text: String,
    at: (i32, i32),
    size: f32,
    h: HPos,
    v: VPos,
    turn: Turn,
    colour: RGBColor,
}

impl Label {
    /// Dark text anchored by its top left corner, reading left to right.
    fn new(text: impl Into<String>, at: (i32, i32), size: f32) -> Self {
        Self {
            text: text.into(),
            at,
            size,
            h: HPos::Left,
            v: VPos::Top,
            turn: Turn::None,
            colour: TEXT,
        }
    }

    fn anchor(self, h: HPos, v: VPos) -> Self {
        Self { h, v, ..self }
    }

    fn turned(self, turn: Turn) -> Self {
        Self { turn, ..self }
    }

    fn colour(self, colour: RGBColor) -> Self {
        Self { colour, ..self }
    }
}

/// Measures text in the embedded font and queues [`Label`]s, set into the picture after the
/// shapes.
struct Lettering {
    font: &'static FontRef<'static>,
    queued: Vec<Label>,
}

impl Lettering {
    fn put(&mut self, label: Label) {
        self.queued.push(label);
    }

    /// The glyphs of `text` at `size` with their pen positions (advances plus kerning).
    fn layout(&self, text: &str, size: f32) -> (Vec<(GlyphId, f32)>, f32) {
        let scaled = self.font.as_scaled(PxScale::from(size));
        let mut pen = 0.0;
        let mut previous = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(before) = previous {
                pen += scaled.kern(before, id);
            }
            glyphs.push((id, pen));
            pen += scaled.h_advance(id);
            previous = Some(id);
        }
        (glyphs, pen)
    }

    /// The advance width of `text` at `size`, in pixels.
    fn width(&self, text: &str, size: f32) -> f32 {
        self.layout(text, size).1
    }

    /// `text`, cut and ended with "…" when it is wider than `max_width` pixels at `size`.
    fn fit(&self, text: &str, size: f32, max_width: u32) -> String {
        let max_width = max_width as f32;
        if self.width(text, size) <= max_width {
            return text.to_string();
        }
        let chars: Vec<char> = text.chars().collect();
        (1..chars.len())
            .rev()
            .map(|keep| chars[..keep].iter().chain(['…'].iter()).collect::<String>())
            .find(|cut| self.width(cut, size) <= max_width)
            .unwrap_or_else(|| "…".to_string())
    }

    /// The largest size from `size` down in steps of one pixel (to 8 at least) at which
    /// `text` is at most `max_width` pixels wide.
    fn shrink_to(&self, text: &str, size: f32, max_width: i32) -> f32 {
        let mut size = size.floor();
        while size > 8.0 && self.width(text, size) > max_width as f32 {
            size -= 1.0;
        }
        size
    }

    /// Sets every queued label into `rgb` (`width × height` RGB pixels), blending each
    /// glyph's coverage over what is there; pixels outside the picture are dropped.
    fn set(&self, rgb: &mut [u8], (width, height): (u32, u32)) {
        for label in &self.queued {
            let scaled = self.font.as_scaled(PxScale::from(label.size));
            let (glyphs, advance) = self.layout(&label.text, label.size);
            let dx = match label.h {
                HPos::Left => 0.0,
                HPos::Center => -advance / 2.0,
                HPos::Right => -advance,
            };
            let dy = match label.v {
                VPos::Top => 0.0,
                VPos::Center => -scaled.height() / 2.0,
                VPos::Bottom => -scaled.height(),
            };
            // Whole-pixel baseline (sharper); the pen keeps its fractions along the line.
            let baseline = (scaled.ascent() + dy).round();
            for (id, pen) in glyphs {
                let glyph = id.with_scale_and_position(scaled.scale(), point(pen + dx, baseline));
                let Some(outline) = self.font.outline_glyph(glyph) else {
                    continue;
                };
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    // The pixel in the text's own frame, relative to the anchor, then turned.
                    let (x, y) = (
                        bounds.min.x as i32 + gx as i32,
                        bounds.min.y as i32 + gy as i32,
                    );
                    let (x, y) = match label.turn {
                        Turn::None => (x, y),
                        Turn::Down => (-y - 1, x),
                        Turn::Up => (y, -x - 1),
                    };
                    let (x, y) = (label.at.0 + x, label.at.1 + y);
                    if x < 0 || y < 0 || x >= width as i32 || y >= height as i32 {
                        return;
                    }
                    let i = (y as usize * width as usize + x as usize) * 3;
                    let a = coverage.clamp(0.0, 1.0);
                    let ink = [label.colour.0, label.colour.1, label.colour.2];
                    for (channel, ink) in rgb[i..i + 3].iter_mut().zip(ink) {
                        let mixed =
                            f32::from(*channel) + (f32::from(ink) - f32::from(*channel)) * a;
                        *channel = mixed.round() as u8;
                    }
                });
            }
        }
    }
}

/// Axis ticks: the multiples of a step of 1, 2 or 5 × 10^k inside an axis range.
struct Ticks {
    values: Vec<f64>,
    /// The step's power of ten: the decimals that print every multiple exactly, or, beyond
    /// ±4, the switch to exponent notation (`2e8`, `1.5e-6`).
    exponent: i32,
}

impl Ticks {
    /// The ticks of the smallest step giving at most `max` ticks in `[lo, hi]` (`lo < hi`);
    /// with `whole`, the step is at least 1.
    fn new(lo: f64, hi: f64, max: usize, whole: bool) -> Self {
        let rough = (hi - lo) / max.max(2) as f64;
        if !(rough.is_finite() && rough > 0.0) {
            return Self {
                values: Vec::new(),
                exponent: 0,
            };
        }
        // Within f64's exponents, so the step below is finite and non-zero.
        let mut exponent = (rough.log10().floor() as i32).clamp(-300, 300) - 1;
        loop {
            for mantissa in [1.0, 2.0, 5.0] {
                let step = mantissa * 10f64.powi(exponent);
                if whole && step < 1.0 {
                    continue;
                }
                let first = (lo / step - 1e-9).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                if last - first < max as i64 {
                    return Self {
                        values: (first..=last).map(|i| i as f64 * step).collect(),
                        exponent,
                    };
                }
            }
            exponent += 1;
        }
    }

    fn format(&self, value: f64) -> String {
        if self.exponent.abs() <= 4 {
            return format!("{value:.*}", self.exponent.min(0).unsigned_abs() as usize);
        }
        // value = n × 10^exponent with n a whole number: print n's digits as d.ddd e±k.
        let n = (value / 10f64.powi(self.exponent)).round() as i64;
        if n == 0 {
            return "0".to_string();
        }
        let digits = n.unsigned_abs().to_string();
        let sign = if n < 0 { "-" } else { "" };
        let power = self.exponent + digits.len() as i32 - 1;
        match digits[1..].trim_end_matches('0') {
            "" => format!("{sign}{}e{power}", &digits[..1]),
            fraction => format!("{sign}{}.{fraction}e{power}", &digits[..1]),
        }
    }
}

/// The axis range of `values` with `headroom` (a fraction of the span) on both sides; a
/// single value gets ±10% of itself (±0.5 where that is no width, as around 0). The result
/// is finite and `lo < hi` for finite input.
fn span(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = if hi > lo {
        // Halves first: the span of ±1e308 overflows.
        (hi / 2.0 - lo / 2.0) * 2.0 * headroom
    } else {
        let pad = lo.abs() * 0.1;
        if lo - pad < hi + pad { pad } else { 0.5 }
    };
    ((lo - pad).max(f64::MIN), (hi + pad).min(f64::MAX))
}

/// A corner of the plot, for the legend.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Corner {
    right: bool,
    upper: bool,
}

/// The corner whose 40%-wide, 35%-tall region of the plot holds the fewest points (upper
/// right first, then lower right, upper left, lower left on ties).
fn legend_corner(
    points: impl Iterator<Item = (f64, f64)>,
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> Corner {
    let corners = [(true, true), (true, false), (false, true), (false, false)]
        .map(|(right, upper)| Corner { right, upper });
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let fx = (x - x_lo) / (x_hi - x_lo);
        let fy = (y - y_lo) / (y_hi - y_lo);
        for (count, corner) in counts.iter_mut().zip(&corners) {
            let in_x = if corner.right { fx >= 0.6 } else { fx <= 0.4 };
            let in_y = if corner.upper { fy >= 0.65 } else { fy <= 0.35 };
            *count += usize::from(in_x && in_y);
        }
    }
    let best = (0..4).min_by_key(|&k| (counts[k], k)).unwrap_or(0);
    corners[best]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_multiples_of_a_round_step() {
        // Epochs 1..=5 with 2% headroom: whole numbers.
        let t = Ticks::new(0.92, 5.08, 9, true);
        assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(t.format(3.0), "3");
        // 0.1..1.25 in at most 9 ticks: step 0.1 gives 12, 0.2 gives 6.
        let t = Ticks::new(0.1, 1.25, 9, false);
        assert_eq!(t.values.len(), 6);
        let printed: Vec<String> = t.values.iter().map(|&v| t.format(v)).collect();
        assert_eq!(printed, ["0.2", "0.4", "0.6", "0.8", "1.0", "1.2"]);
        // 1..50 epochs in at most 9: step 10 (step 5 gives 10 ticks).
        let t = Ticks::new(1.0, 50.0, 9, true);
        assert_eq!(t.values, [10.0, 20.0, 30.0, 40.0, 50.0]);
        // A single whole x: one tick; a few whole x never get a fractional step.
        assert_eq!(Ticks::new(-0.5, 0.5, 9, true).values, [0.0]);
        assert_eq!(Ticks::new(0.96, 3.04, 9, true).values, [1.0, 2.0, 3.0]);
        // Far from 1, exponent notation: 0..1e9 in steps of 2e8; 0..6e-5 in steps of 1e-5.
        let t = Ticks::new(-2e7, 1.02e9, 9, false);
        let printed: Vec<String> = t.values.iter().map(|&v| t.format(v)).collect();
        assert_eq!(printed, ["0", "2e8", "4e8", "6e8", "8e8", "1e9"]);
        assert_eq!(t.format(1.2e9), "1.2e9");
        assert_eq!(t.format(-4e8), "-4e8");
        let t = Ticks::new(0.0, 6e-5, 9, false);
        assert_eq!(t.format(t.values[3]), "3e-5");
        // Negative and large values.
        let t = Ticks::new(-2500.0, 2500.0, 9, false);
        assert_eq!(t.values, [-2000.0, -1000.0, 0.0, 1000.0, 2000.0]);
        assert_eq!(t.format(-1000.0), "-1000");
    }

    #[test]
    fn legend_goes_where_the_points_are_not() {
        let x = (0.0, 10.0);
        let y = (0.0, 1.0);
        // Falling loss: upper right is free.
        let falling = (0..=10).map(|i| (f64::from(i), 1.0 - f64::from(i) / 10.0));
        let corner = legend_corner(falling, x, y);
        assert_eq!((corner.right, corner.upper), (true, true));
        // Rising accuracy: upper right taken, lower right free.
        let rising = (0..=10).map(|i| (f64::from(i), f64::from(i) / 10.0));
        let corner = legend_corner(rising, x, y);
        assert_eq!((corner.right, corner.upper), (true, false));
    }

    /// Ink columns (any channel below white) of a `width × height` RGB picture.
    fn ink_columns(rgb: &[u8], width: usize) -> Vec<usize> {
        let mut columns: Vec<usize> = rgb
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&c| c < 255))
            .map(|(i, _)| i % width)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    #[test]
    fn glyphs_keep_the_fonts_side_bearings() {
        // "cl" at 96 px: the blank between the c's ink and the l's ink is the c's right side
        // bearing plus the pair's kerning plus the l's left side bearing, in font units
        // scaled to pixels (±1.5 px for antialiasing), not just a pen-to-pen guess.
        let font = font().expect("embedded font parses");
        let size = 96.0;
        let scaled = font.as_scaled(PxScale::from(size));
        let (c, l) = (font.glyph_id('c'), font.glyph_id('l'));
        let units = |id| font.outline(id).expect("outlined glyph").bounds;
        let per_unit = scaled.h_scale_factor();
        let c_right_bearing = font.h_advance_unscaled(c) * per_unit - units(c).max.x * per_unit;
        let l_left_bearing = units(l).min.x * per_unit;
        let expected_gap = c_right_bearing + scaled.kern(c, l) + l_left_bearing;

        let (width, height) = (200u32, 120u32);
        let mut rgb = vec![255u8; (width * height * 3) as usize];
        let text = Lettering {
            font,
            queued: vec![Label::new("cl", (20, 10), size)],
        };
        text.set(&mut rgb, (width, height));
        let columns = ink_columns(&rgb, width as usize);
        let gap_start = columns
            .windows(2)
            .find(|w| w[1] > w[0] + 1)
            .expect("two separate glyphs");
        let measured_gap = (gap_start[1] - gap_start[0] - 1) as f32;
        assert!(
            (measured_gap - expected_gap).abs() <= 1.5,
            "gap {measured_gap} px, font metrics say {expected_gap:.2} px"
        );
        // And the ink starts at the anchor plus the c's left side bearing.
        let c_left = 20.0 + units(c).min.x * per_unit;
        assert!(
            (columns[0] as f32 - c_left).abs() <= 1.5,
            "{} vs {c_left}",
            columns[0]
        );
    }

    #[test]
    fn anchors_and_turns_place_the_text_box() {
        let font = font().expect("embedded font parses");
        let (width, height) = (160usize, 160usize);
        let bounds = |label: Label| {
            let mut rgb = vec![255u8; width * height * 3];
            Lettering {
                font,
                queued: vec![label],
            }
            .set(&mut rgb, (width as u32, height as u32));
            let inked: Vec<(usize, usize)> = rgb
                .chunks_exact(3)
                .enumerate()
                .filter(|(_, p)| p.iter().any(|&c| c < 255))
                .map(|(i, _)| (i % width, i / width))
                .collect();
            let xs = inked.iter().map(|p| p.0);
            let ys = inked.iter().map(|p| p.1);
            (
                (xs.clone().min().unwrap(), xs.max().unwrap()),
                (ys.clone().min().unwrap(), ys.max().unwrap()),
            )
        };
        // "H" is symmetric: centred on x = 80 it spans 80 ± half its ink width (±1 px).
        let ((x0, x1), (y0, y1)) =
            bounds(Label::new("H", (80, 80), 40.0).anchor(HPos::Center, VPos::Center));
        assert!((x0 + x1).abs_diff(160) <= 2, "H spans x {x0}..{x1}");
        let (h_wide, h_tall) = (x1 - x0, y1 - y0);
        // Turned up, the same glyph is as wide as it was tall and centred the same way.
        let ((u0, u1), (v0, v1)) = bounds(
            Label::new("H", (80, 80), 40.0)
                .anchor(HPos::Center, VPos::Center)
                .turned(Turn::Up),
        );
        assert!((u1 - u0).abs_diff(h_tall) <= 1 && (v1 - v0).abs_diff(h_wide) <= 1);
        assert!((v0 + v1).abs_diff(160) <= 2, "turned H spans y {v0}..{v1}");
        // Turned up the cap tops face left: the ink lies left of where the baseline went.
        // The box is centred on the anchor, so the ink's middle is near x = 80 as well.
        assert!((u0 + u1).abs_diff(160) <= 12, "turned H spans x {u0}..{u1}");
        // Right-anchored text ends at the anchor (less the H's right side bearing).
        let ((_, r1), _) = bounds(Label::new("H", (100, 80), 40.0).anchor(HPos::Right, VPos::Top));
        assert!((94..100).contains(&r1), "right edge {r1}");
    }
}
