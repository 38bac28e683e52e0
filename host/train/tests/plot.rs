//! Tests of `tensorlet_train::plot`: the files are PNGs of the documented sizes (decoded with
//! the `png` crate), the heat map's cells are shaded by count as `heat_colour` says (pixels
//! sampled at cell centres away from the count text), text was drawn (the title band is not
//! plain background), and bad input is refused with an error naming the file and the problem.

use std::fs::File;
use std::path::{Path, PathBuf};

use tensorlet_train::plot::{
    Curve, EpochPoint, LINE_CHART_SIZE, MAX_HEATMAP_CLASSES, PlotError, heat_colour, heatmap,
    heatmap_size, learning_curves, line_chart,
};

/// A fresh, empty folder for one test under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plot")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// A decoded 8-bit RGB picture.
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Picture {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// How many pixels of the band of rows `rows` differ from white.
    fn inked_in_rows(&self, rows: std::ops::Range<u32>) -> usize {
        rows.flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y) != [255, 255, 255])
            .count()
    }
}

fn decode(path: &Path) -> Picture {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG header");
    let mut rgb = vec![0; reader.output_buffer_size().expect("a frame size")];
    let info = reader.next_frame(&mut rgb).expect("a PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{}", path.display());
    rgb.truncate(info.buffer_size());
    Picture {
        width: info.width,
        height: info.height,
        rgb,
    }
}

fn curve(name: &str, points: &[(f64, f64)]) -> Curve {
    Curve {
        name: name.into(),
        points: points.to_vec(),
    }
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Channel sum: a plain darkness measure for colours from one colour map.
fn lightness(p: [u8; 3]) -> u32 {
    p.iter().map(|&c| u32::from(c)).sum()
}

#[test]
fn line_chart_is_a_png_of_the_stated_size_with_title_and_curves() {
    let path = scratch("line").join("chart.png");
    let curves = [
        curve("train", &[(1.0, 2.3), (2.0, 1.1), (3.0, 0.6), (4.0, 0.4)]),
        curve(
            "validation",
            &[(1.0, 2.4), (2.0, 1.3), (3.0, 0.9), (4.0, 0.8)],
        ),
    ];
    line_chart(&path, "Loss per epoch", "epoch", "loss", &curves).expect("chart written");
    let pic = decode(&path);
    assert_eq!((pic.width, pic.height), LINE_CHART_SIZE);
    // The title is drawn in the top 16 + 30 pixels (margin, 26 px caption): some dark ink.
    let title_ink = (0..46)
        .flat_map(|y| (0..pic.width).map(move |x| (x, y)))
        .filter(|&(x, y)| lightness(pic.pixel(x, y)) < 3 * 128)
        .count();
    assert!(
        title_ink > 100,
        "title band has only {title_ink} dark pixels"
    );
    // Both series colours appear (the first two of the palette: blue and orange lines).
    let count = |c: [u8; 3]| {
        pic.rgb
            .chunks_exact(3)
            .filter(|p| p.iter().zip(c).all(|(&a, b)| a.abs_diff(b) <= 8))
            .count()
    };
    assert!(count([31, 119, 180]) > 200, "blue train line missing");
    assert!(
        count([255, 127, 14]) > 200,
        "orange validation line missing"
    );
}

#[test]
fn heatmap_shades_cells_by_count_and_labels_them() {
    let dir = scratch("heatmap");
    let path = dir.join("confusion.png");
    let names = labels(&["cat", "dog", "bird"]);
    let matrix = vec![vec![50, 0, 3], vec![10, 40, 0], vec![0, 25, 5]];
    heatmap(&path, "Confusion matrix", &names, &matrix).expect("heat map written");
    let pic = decode(&path);
    assert_eq!((pic.width, pic.height), heatmap_size(3));
    // Layout stated by heatmap_size: cells of 600/3 clamped to 96 px, 190 px left, 64 px top.
    let (cell, left, top) = (96, 190, 64);
    assert_eq!(
        heatmap_size(3),
        (left + 3 * cell + 120, top + 3 * cell + 120)
    );
    // Sample a quarter-cell left of the centre, at mid height: clear of the count text (at
    // most 40% of the cell tall, a few glyphs wide) and of the grid lines.
    let sample =
        |row: u32, col: u32| pic.pixel(left + col * cell + cell / 8, top + row * cell + cell / 2);
    let max = sample(0, 0);
    let zero = sample(0, 1);
    assert!(
        lightness(max) + 300 < lightness(zero),
        "count 50 {max:?} not darker than count 0 {zero:?}"
    );
    // Each sampled cell has exactly the colour map's colour for its share of the largest count
    // (±1 for rounding).
    for (row, col, count) in [(0, 0, 50u32), (0, 1, 0), (1, 1, 40), (2, 1, 25), (1, 0, 10)] {
        let want = heat_colour(f64::from(count) / 50.0);
        let got = sample(row, col);
        assert!(
            got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 1),
            "cell ({row}, {col}) count {count}: {got:?}, expected {want:?}"
        );
    }
    // Monotone: 0 < 10 < 25 < 40 < 50 gets strictly darker.
    let by_count = [
        sample(0, 1),
        sample(1, 0),
        sample(2, 1),
        sample(1, 1),
        sample(0, 0),
    ];
    for pair in by_count.windows(2) {
        assert!(
            lightness(pair[1]) < lightness(pair[0]),
            "{by_count:?} not darkening"
        );
    }
    // The title band and the count in the top-left cell have ink.
    assert!(pic.inked_in_rows(10..top - 10) > 100, "no title drawn");
    let centre = (left + cell / 2, top + cell / 2);
    let text_ink = (centre.1 - 8..centre.1 + 8)
        .flat_map(|y| (centre.0 - 12..centre.0 + 12).map(move |x| (x, y)))
        .filter(|&(x, y)| pic.pixel(x, y) != max)
        .count();
    assert!(text_ink > 20, "no count written in the top-left cell");
}

#[test]
fn heat_colour_darkens_in_every_channel_from_white() {
    assert_eq!(heat_colour(0.0), [255, 255, 255]);
    assert_eq!(heat_colour(1.0), [8, 48, 107]);
    assert_eq!(heat_colour(0.5), [107, 174, 214]);
    // Halfway between the first two stops, rounded: (255 + 107) / 2 = 181 etc.
    assert_eq!(heat_colour(0.25), [181, 215, 235]);
    let mut previous = heat_colour(0.0);
    for k in 1..=100 {
        let c = heat_colour(f64::from(k) / 100.0);
        assert!(c.iter().zip(previous).all(|(&now, before)| now <= before));
        previous = c;
    }
    assert_eq!(heat_colour(f64::NAN), [255, 255, 255]);
    assert_eq!(heat_colour(7.0), heat_colour(1.0));
}

#[test]
fn many_long_labels_still_draw() {
    let path = scratch("heatmap_many").join("confusion.png");
    let names: Vec<String> = (0..12)
        .map(|i| format!("a rather long class name {i}"))
        .collect();
    let matrix: Vec<Vec<u64>> = (0..12)
        .map(|i| (0..12).map(|j| if i == j { 1000 + i } else { j }).collect())
        .collect();
    heatmap(&path, "Confusion matrix (validation)", &names, &matrix).expect("written");
    let pic = decode(&path);
    assert_eq!((pic.width, pic.height), heatmap_size(12));
    assert_eq!(heatmap_size(12), (190 + 12 * 50 + 120, 64 + 12 * 50 + 120));
    // Rotated column labels: ink below the cells.
    let below = 64 + 12 * 50;
    assert!(
        pic.inked_in_rows(below + 10..below + 80) > 200,
        "no column labels"
    );
}

#[test]
fn extreme_values_still_draw() {
    let dir = scratch("extreme");
    for (name, points) in [
        ("huge", vec![(0.0, 1e308), (1.0, -1e308), (2.0, f64::MAX)]),
        ("tiny", vec![(0.0, 1e-320)]),
        ("single", vec![(7.0, 0.25)]),
        ("flat", vec![(0.0, 3.0), (1e9, 3.0)]),
    ] {
        let path = dir.join(format!("{name}.png"));
        line_chart(&path, name, "x", "y", &[curve(name, &points)])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let pic = decode(&path);
        assert_eq!((pic.width, pic.height), LINE_CHART_SIZE, "{name}");
    }
    // All-zero confusion matrix: every cell is count 0's colour, white.
    let path = dir.join("zeros.png");
    heatmap(
        &path,
        "nothing yet",
        &labels(&["a", "b"]),
        &[vec![0, 0], vec![0, 0]],
    )
    .expect("written");
    let pic = decode(&path);
    let cell = 96;
    assert_eq!(pic.pixel(190 + cell / 8, 64 + cell / 2), [255, 255, 255]);
}

#[test]
fn learning_curves_write_loss_and_accuracy() {
    let dir = scratch("curves").join("nested");
    let epochs: Vec<EpochPoint> = (1..=5)
        .map(|e| EpochPoint {
            epoch: e,
            train_loss: 1.0 / e as f64,
            valid_loss: Some(1.2 / e as f64),
            train_accuracy: Some(0.5 + 0.08 * e as f64),
            valid_accuracy: (e > 1).then_some(0.5 + 0.07 * e as f64),
        })
        .collect();
    let written = learning_curves(&dir, &epochs).expect("curves written");
    assert_eq!(
        written,
        vec![dir.join("loss.png"), dir.join("accuracy.png")]
    );
    for path in &written {
        let pic = decode(path);
        assert_eq!((pic.width, pic.height), LINE_CHART_SIZE);
        assert!(
            pic.inked_in_rows(0..46) > 100,
            "{}: no title",
            path.display()
        );
    }

    // Without accuracies only the loss chart.
    let dir = scratch("curves_loss_only");
    let epochs = [EpochPoint {
        epoch: 0,
        train_loss: 0.7,
        valid_loss: None,
        train_accuracy: None,
        valid_accuracy: None,
    }];
    assert_eq!(
        learning_curves(&dir, &epochs).expect("loss written"),
        vec![dir.join("loss.png")]
    );
    assert!(!dir.join("accuracy.png").exists());
}

#[test]
fn bad_input_is_refused_naming_the_file_and_the_problem() {
    let dir = scratch("errors");
    let path = dir.join("x.png");
    let message = |e: PlotError| e.to_string();

    let e = line_chart(&path, "t", "x", "y", &[]).unwrap_err();
    assert!(matches!(e, PlotError::Empty { .. }));
    assert_eq!(
        message(e),
        format!("{}: nothing to plot: no curves", path.display())
    );

    let e = line_chart(&path, "t", "x", "y", &[curve("train", &[])]).unwrap_err();
    assert!(message(e).contains("curve \"train\" has no points"));

    let e = line_chart(
        &path,
        "t",
        "x",
        "y",
        &[curve("valid", &[(1.0, 0.5), (2.0, f64::NAN)])],
    )
    .unwrap_err();
    assert!(matches!(e, PlotError::NotFinite { .. }));
    assert_eq!(
        message(e),
        format!(
            "{}: curve \"valid\" point 1 y is NaN, expected a finite number",
            path.display()
        )
    );
    let e = line_chart(&path, "t", "x", "y", &[curve("c", &[(f64::INFINITY, 0.5)])]).unwrap_err();
    assert!(message(e).contains("curve \"c\" point 0 x is inf"));

    let e = heatmap(&path, "t", &[], &[]).unwrap_err();
    assert!(message(e).contains("no class labels"));
    let e = heatmap(&path, "t", &labels(&["a", "b"]), &[vec![1, 2], vec![3]]).unwrap_err();
    assert!(matches!(
        e,
        PlotError::Ragged {
            row: 1,
            len: 1,
            expected: 2,
            ..
        }
    ));
    assert_eq!(
        message(e),
        format!(
            "{}: confusion matrix row 1 has 1 counts, expected 2 (one per class label)",
            path.display()
        )
    );
    let many: Vec<String> = (0..=MAX_HEATMAP_CLASSES).map(|i| i.to_string()).collect();
    let e = heatmap(&path, "t", &many, &[]).unwrap_err();
    assert_eq!(
        message(e),
        format!(
            "{}: 257 classes, a heat map draws at most 256",
            path.display()
        )
    );
    let e = heatmap(&path, "t", &labels(&["a", "b", "c"]), &[vec![1, 2, 3]]).unwrap_err();
    assert!(message(e).contains("3 class labels but the confusion matrix has 1 rows"));

    let e = learning_curves(&dir.join("none"), &[]).unwrap_err();
    assert!(message(e).ends_with("none: nothing to plot: no epochs"));
    let nan_epoch = EpochPoint {
        epoch: 3,
        train_loss: f64::NAN,
        valid_loss: None,
        train_accuracy: None,
        valid_accuracy: None,
    };
    let e = learning_curves(&dir, &[nan_epoch]).unwrap_err();
    assert!(message(e).contains("loss.png: curve \"train\" point 0 y is NaN"));

    // Nothing was written for refused input, and a missing folder is an I/O error naming it.
    assert!(!path.exists());
    let missing = dir.join("no such folder").join("x.png");
    let e = line_chart(&missing, "t", "x", "y", &[curve("c", &[(0.0, 1.0)])]).unwrap_err();
    assert!(matches!(e, PlotError::Io { .. }));
    assert!(message(e).starts_with(&missing.display().to_string()));
}
