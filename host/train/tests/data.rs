//! Data loading against hand-made files and the committed MNIST slice: IDX round trips and
//! every malformation, CSV values and errors, PNG image folders, text folders and their
//! embedding, seeded splits, digests and the `[data]` spec table.

use std::path::{Path, PathBuf};
use tensorlet_train::data::csv::{self, Task};
use tensorlet_train::data::idx::{self, MnistSplit};
use tensorlet_train::data::images;
use tensorlet_train::data::text;
use tensorlet_train::data::{DataError, DataSource, Dataset, Rng, Targets, split_indices};

#[path = "../../../tests/common/temp.rs"]
mod temp;
use temp::TempDir;

/// A fresh, empty folder under the system temp dir, unique to this process and `name`,
/// removed when dropped.
fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("train-data-{name}"))
}

/// The committed first 1,000 MNIST test images and labels.
fn slice_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mnist-test-1k")
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// An IDX header written out by hand: 00 00 08 rank, then big-endian dimensions.
fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn message(e: &DataError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------- IDX

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = temp_dir("idx-round-trip");
    let dims = [3usize, 2, 4];
    let data: Vec<u8> = (0..24u8).map(|i| i.wrapping_mul(37)).collect();
    for gzip in [false, true] {
        let path = dir.join(if gzip { "a.gz" } else { "a" });
        idx::write(&path, &dims, &data, gzip).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        if gzip {
            assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        } else {
            // The exact bytes of the format, built independently.
            let mut want = idx_header(&[3, 2, 4]);
            want.extend_from_slice(&data);
            assert_eq!(bytes, want);
        }
        let back = idx::read(&path).unwrap();
        assert_eq!(back.dims, dims);
        assert_eq!(back.data, data);
    }
    // Compression is detected by content, not by name.
    idx::write(&dir.join("plain.gz"), &[2], &[7, 9], false).unwrap();
    idx::write(&dir.join("packed"), &[2], &[7, 9], true).unwrap();
    assert_eq!(idx::read(&dir.join("plain.gz")).unwrap().data, [7, 9]);
    assert_eq!(idx::read(&dir.join("packed")).unwrap().data, [7, 9]);
    // The product of the dimensions must be the data length.
    let e = idx::write(&dir.join("bad"), &[2, 2], &[1, 2, 3], false).unwrap_err();
    assert!(
        message(&e).contains("cannot write 3 bytes with dimensions [2, 2]"),
        "{e}"
    );
}

#[test]
fn committed_mnist_slice_loads_with_known_values() {
    let d = idx::load_mnist(&slice_dir(), MnistSplit::Test).unwrap();
    assert_eq!(d.len(), 1000);
    assert_eq!(d.example_shape, [1, 28, 28]);
    assert_eq!(d.example_len(), 784);
    assert_eq!(d.features.len(), 784_000);
    let Targets::Classes { labels, names } = &d.targets else {
        panic!("MNIST has classes")
    };
    assert_eq!(&labels[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(names, &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    // Per-class counts of the first 1000 test labels (numpy.bincount on the file).
    let mut counts = [0usize; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]);
    let (lo, hi) = d
        .features
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    // Test image 0 (a 7), row 7, columns 6..12: bytes 84 185 159 151 60 36, as /255.
    let img = d.example(0);
    for (k, byte) in [84u8, 185, 159, 151, 60, 36].into_iter().enumerate() {
        let want = f32::from(byte) / 255.0;
        assert!(
            (img[7 * 28 + 6 + k] - want).abs() <= 1e-7,
            "column {}",
            6 + k
        );
    }
    assert_eq!(img[0], 0.0);
    // The digest of this content, computed by numpy + hashlib from the documented layout.
    assert_eq!(
        d.digest(),
        "5bb6bed6e7b6d2af109867c14e9418618c654b994cb05b47c946771187042b7d"
    );
    // The slice has no training half: the error names the missing file and the fix.
    let e = idx::load_mnist(&slice_dir(), MnistSplit::Train).unwrap_err();
    let m = message(&e);
    assert!(matches!(e, DataError::Io { .. }), "{m}");
    assert!(
        m.contains("train-images-idx3-ubyte") && m.contains("fetch.sh"),
        "{m}"
    );
}

#[test]
fn truncated_idx_is_an_error_naming_the_file() {
    let dir = temp_dir("idx-truncated");
    let mut bytes = idx_header(&[2, 3]);
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    // Cut in the data.
    let cut = dir.join("cut-data");
    write(&cut, &bytes[..bytes.len() - 2]);
    let e = idx::read(&cut).unwrap_err();
    let m = message(&e);
    assert!(m.starts_with(&cut.display().to_string()), "{m}");
    assert!(
        m.contains("truncated") && m.contains("need 6 data bytes"),
        "{m}"
    );
    assert!(m.contains("found 4"), "{m}");
    // Cut in the header.
    let cut = dir.join("cut-header");
    write(&cut, &bytes[..6]);
    let m = message(&idx::read(&cut).unwrap_err());
    assert!(m.contains("truncated header"), "{m}");
    // Too long.
    let long = dir.join("long");
    let mut more = bytes.clone();
    more.push(0);
    write(&long, &more);
    let m = message(&idx::read(&long).unwrap_err());
    assert!(m.contains("unexpected bytes after the 6 data bytes"), "{m}");
    // A gzip stream cut short.
    let gz = dir.join("x.gz");
    idx::write(&gz, &[100, 10], &vec![3u8; 1000], true).unwrap();
    let packed = std::fs::read(&gz).unwrap();
    write(&gz, &packed[..packed.len() / 2]);
    let e = idx::read(&gz).unwrap_err();
    let m = message(&e);
    assert!(matches!(e, DataError::Format { .. }), "{m}");
    assert!(m.starts_with(&gz.display().to_string()), "{m}");
    // An empty file.
    let empty = dir.join("empty");
    write(&empty, &[]);
    let m = message(&idx::read(&empty).unwrap_err());
    assert!(m.contains("truncated: 0 bytes"), "{m}");
}

#[test]
fn wrong_magic_and_type_are_errors() {
    let dir = temp_dir("idx-magic");
    let p = dir.join("png-not-idx");
    write(&p, b"\x89PNG\r\n\x1a\n0000");
    let m = message(&idx::read(&p).unwrap_err());
    assert!(
        m.contains("not an IDX file: it starts with 89 50 4e 47"),
        "{m}"
    );
    let p = dir.join("floats");
    let mut f = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
    f.extend_from_slice(&1.0f32.to_be_bytes());
    write(&p, &f);
    let m = message(&idx::read(&p).unwrap_err());
    assert!(m.contains("0x0d (f32) is not supported"), "{m}");
    let p = dir.join("rank0");
    write(&p, &[0, 0, 8, 0]);
    let m = message(&idx::read(&p).unwrap_err());
    assert!(m.contains("0 dimensions"), "{m}");
    let e = idx::read(&dir.join("absent")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
}

#[test]
fn mnist_count_rank_and_label_mismatches_are_errors() {
    let dir = temp_dir("idx-mismatch");
    let images = dir.join("t10k-images-idx3-ubyte");
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    idx::write(&images, &[3, 2, 2], &[0; 12], false).unwrap();
    idx::write(&labels, &[2], &[1, 2], true).unwrap();
    let m = message(&idx::load_mnist(&dir, MnistSplit::Test).unwrap_err());
    assert!(m.starts_with(&labels.display().to_string()), "{m}");
    assert!(
        m.contains("2 labels") && m.contains("holds 3 images"),
        "{m}"
    );
    // A label that is not a digit.
    idx::write(&labels, &[3], &[1, 12, 2], true).unwrap();
    let m = message(&idx::load_mnist(&dir, MnistSplit::Test).unwrap_err());
    assert!(m.contains("label 1 is 12"), "{m}");
    // Images of the wrong rank.
    idx::write(&images, &[3, 4], &[0; 12], false).unwrap();
    let m = message(&idx::load_mnist(&dir, MnistSplit::Test).unwrap_err());
    assert!(
        m.contains("images have dimensions [3, 4]: expected 3"),
        "{m}"
    );
    // A good pair (labels gzip, images plain): values are byte / 255.
    idx::write(&images, &[3, 1, 2], &[0, 255, 51, 102, 1, 254], false).unwrap();
    idx::write(&labels, &[3], &[9, 0, 4], true).unwrap();
    let d = idx::load_mnist(&dir, MnistSplit::Test).unwrap();
    assert_eq!(d.example_shape, [1, 1, 2]);
    assert_eq!(d.features, [0.0, 1.0, 0.2, 0.4, 1.0 / 255.0, 254.0 / 255.0]);
    assert!(matches!(&d.targets, Targets::Classes { labels, .. } if labels == &[9, 0, 4]));
}

// ---------------------------------------------------------------------------------- CSV

#[test]
fn csv_regression_values_are_exact() {
    let dir = temp_dir("csv-good");
    let p = dir.join("good.csv");
    write(
        &p,
        b"\xef\xbb\xbfx1, y ,\"x,2\"\r\n1.5,10,-2\r\n\r\n0.25 , 2e1,3e2\n-.5,+7,\"4\"\n",
    );
    let d = csv::load(&p, "y", Task::Regression).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.example_shape, [2]);
    assert_eq!(d.features, [1.5, -2.0, 0.25, 300.0, -0.5, 4.0]);
    assert_eq!(
        d.feature_names,
        Some(vec!["x1".to_string(), "x,2".to_string()])
    );
    assert_eq!(
        d.targets,
        Targets::Values {
            values: vec![10.0, 20.0, 7.0],
            width: 1,
            names: vec!["y".into()]
        }
    );
    assert_eq!(d.source, p.display().to_string());
}

#[test]
fn csv_classification_sorts_class_names() {
    let dir = temp_dir("csv-classes");
    let p = dir.join("c.csv");
    write(&p, b"a,kind\n1,dog\n2,cat\n3,dog\n4,bird\n");
    let d = csv::load(&p, "kind", Task::Classification).unwrap();
    assert_eq!(
        d.targets,
        Targets::Classes {
            labels: vec![2, 1, 2, 0],
            names: vec!["bird".into(), "cat".into(), "dog".into()]
        }
    );
    // Numeric class names sort as numbers: 2 before 10.
    write(&p, b"a,k\n1,10\n2,2\n3,10\n");
    let d = csv::load(&p, "k", Task::Classification).unwrap();
    assert_eq!(
        d.targets,
        Targets::Classes {
            labels: vec![1, 0, 1],
            names: vec!["2".into(), "10".into()]
        }
    );
}

#[test]
fn csv_errors_name_file_and_line() {
    let dir = temp_dir("csv-bad");
    let cases: [(&str, &str, usize, &str); 8] = [
        (
            "x,y\n1,2\n3\n",
            "y",
            3,
            "1 field(s), but the header has 2 columns",
        ),
        (
            "x,y\n1,2\n3,4,5\n",
            "y",
            3,
            "3 field(s), but the header has 2 columns",
        ),
        ("x,y,z\n1,2,3\n4,,6\n", "y", 3, "column `y` is empty"),
        (
            "x,y\n1,2\n\n3,abc\n",
            "y",
            4,
            "column `y`: `abc` is not a number",
        ),
        (
            "x,y\nnan,2\n",
            "y",
            2,
            "column `x`: `nan` is not a finite number",
        ),
        (
            "x,y\n1,2\n",
            "z",
            1,
            "no target column `z`; the columns are: x, y",
        ),
        ("x,y,x\n1,2,3\n", "y", 1, "header names column `x` twice"),
        ("x,y\n", "y", 2, "no data rows"),
    ];
    for (i, (text, target, line, what)) in cases.into_iter().enumerate() {
        let p = dir.join(format!("case{i}.csv"));
        write(&p, text.as_bytes());
        let e = csv::load(&p, target, Task::Regression).unwrap_err();
        let m = message(&e);
        match &e {
            DataError::Csv {
                path, line: got, ..
            } => {
                assert_eq!(path, &p, "{m}");
                assert_eq!(*got, line, "{m}");
            }
            other => panic!("case {i}: expected a CSV error, got {other:?}"),
        }
        assert!(m.starts_with(&format!("{}:{line}: ", p.display())), "{m}");
        assert!(m.contains(what), "case {i}: {m}");
    }
    let p = dir.join("empty.csv");
    write(&p, b"");
    let m = message(&csv::load(&p, "y", Task::Regression).unwrap_err());
    assert!(m.contains(":1: empty file"), "{m}");
    let p = dir.join("latin1.csv");
    write(&p, b"x,y\n1,2\n\xe9,3\n");
    let m = message(&csv::load(&p, "y", Task::Regression).unwrap_err());
    assert!(m.contains(":3: not UTF-8"), "{m}");
}

// ------------------------------------------------------------------------------- images

/// Writes a PNG with the `png` crate.
fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
}

#[test]
fn image_folder_loads_gray_rgb_and_16_bit() {
    use png::{BitDepth, ColorType};
    let dir = temp_dir("images");
    for class in ["b", "a"] {
        std::fs::create_dir(dir.join(class)).unwrap();
    }
    // Class a: two gray 3x2 images (one 16-bit), and a stray text file that is ignored.
    write_png(
        &dir.join("a/1.png"),
        3,
        2,
        ColorType::Grayscale,
        BitDepth::Eight,
        &[0, 51, 102, 153, 204, 255],
    );
    let g16: Vec<u8> = [0u16, 65535, 13107, 1, 32768, 65534]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    write_png(
        &dir.join("a/2.PNG"),
        3,
        2,
        ColorType::Grayscale,
        BitDepth::Sixteen,
        &g16,
    );
    write(&dir.join("a/notes.txt"), b"not an image");
    // Class b: one RGBA 3x2 image.
    let rgba: Vec<u8> = (0..6)
        .flat_map(|i| [10 * i as u8, 200 - 20 * i as u8, 40 * i as u8, 128])
        .collect();
    write_png(
        &dir.join("b/x.png"),
        3,
        2,
        ColorType::Rgba,
        BitDepth::Eight,
        &rgba,
    );

    let d = images::load(&dir, 1).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.example_shape, [1, 2, 3]);
    assert_eq!(
        d.targets,
        Targets::Classes {
            labels: vec![0, 0, 1],
            names: vec!["a".into(), "b".into()]
        }
    );
    assert_eq!(d.example(0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    let want16 = [
        0.0,
        1.0,
        0.2,
        1.0 / 65535.0,
        32768.0 / 65535.0,
        65534.0 / 65535.0,
    ];
    for (got, want) in d.example(1).iter().zip(want16) {
        assert!((got - want).abs() <= 1e-7, "{got} vs {want}");
    }
    for (i, got) in d.example(2).iter().enumerate() {
        let (r, g, b) = (10.0 * i as f64, 200.0 - 20.0 * i as f64, 40.0 * i as f64);
        let want = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0;
        assert!(
            (f64::from(*got) - want).abs() <= 1e-6,
            "pixel {i}: {got} vs {want}"
        );
    }

    let d3 = images::load(&dir, 3).unwrap();
    assert_eq!(d3.example_shape, [3, 2, 3]);
    // Gray is repeated into the three planes; RGB keeps its planes (CHW), alpha dropped.
    assert_eq!(&d3.example(0)[..6], &d3.example(0)[6..12]);
    assert_eq!(&d3.example(0)[..6], &d3.example(0)[12..]);
    let rgb = d3.example(2);
    for i in 0..6 {
        assert!((rgb[i] - 10.0 * i as f32 / 255.0).abs() <= 1e-7);
        assert!((rgb[6 + i] - (200.0 - 20.0 * i as f32) / 255.0).abs() <= 1e-7);
        assert!((rgb[12 + i] - 40.0 * i as f32 / 255.0).abs() <= 1e-7);
    }
    let m = message(&images::load(&dir, 2).unwrap_err());
    assert!(
        m.contains("2 channels: expected 1 (gray) or 3 (RGB)"),
        "{m}"
    );
}

#[test]
fn image_folder_errors_name_folder_or_file() {
    use png::{BitDepth, ColorType};
    let dir = temp_dir("images-bad");
    let m = message(&images::load(&dir, 1).unwrap_err());
    assert!(m.contains("no class folders"), "{m}");
    std::fs::create_dir(dir.join("cat")).unwrap();
    std::fs::create_dir(dir.join("dog")).unwrap();
    write_png(
        &dir.join("cat/a.png"),
        2,
        2,
        ColorType::Grayscale,
        BitDepth::Eight,
        &[1, 2, 3, 4],
    );
    // dog/ is empty.
    let e = images::load(&dir, 1).unwrap_err();
    let m = message(&e);
    assert!(m.starts_with(&dir.join("dog").display().to_string()), "{m}");
    assert!(m.contains("class folder `dog` holds no .png files"), "{m}");
    // A different size.
    write_png(
        &dir.join("dog/big.png"),
        3,
        2,
        ColorType::Grayscale,
        BitDepth::Eight,
        &[0; 6],
    );
    let m = message(&images::load(&dir, 1).unwrap_err());
    assert!(
        m.starts_with(&dir.join("dog/big.png").display().to_string()),
        "{m}"
    );
    assert!(m.contains("image is 3x2") && m.contains("is 2x2"), "{m}");
    // Not a PNG.
    write(&dir.join("dog/big.png"), b"GIF89a....");
    let m = message(&images::load(&dir, 1).unwrap_err());
    assert!(m.contains("big.png: not a valid PNG"), "{m}");
}

// ------------------------------------------------------------------------- split, digest

/// `n` examples whose single feature is their index, with target `10 * index`.
fn indexed(n: usize) -> Dataset {
    Dataset::new(
        (0..n).map(|i| i as f32).collect(),
        vec![1],
        Targets::Values {
            values: (0..n).map(|i| 10.0 * i as f32).collect(),
            width: 1,
            names: vec!["t".into()],
        },
        None,
        "indexed",
    )
    .unwrap()
}

#[test]
fn split_is_seeded_and_a_permutation() {
    let d = indexed(50);
    let (a, b) = d.split(0.3, 42).unwrap();
    assert_eq!((a.len(), b.len()), (35, 15));
    let (a2, b2) = d.split(0.3, 42).unwrap();
    assert_eq!((&a, &b), (&a2, &b2));
    let (a3, _) = d.split(0.3, 43).unwrap();
    assert_ne!(a.features, a3.features);
    let mut all: Vec<f32> = a.features.iter().chain(&b.features).copied().collect();
    assert_ne!(all, d.features, "shuffled");
    all.sort_by(f32::total_cmp);
    assert_eq!(all, d.features, "a permutation");
    // Targets travel with their examples.
    let Targets::Values { values, .. } = &b.targets else {
        panic!()
    };
    for (x, t) in b.features.iter().zip(values) {
        assert_eq!(*t, 10.0 * x);
    }
    // The order is that of Rng::shuffle over the indices.
    let mut order: Vec<usize> = (0..50).collect();
    Rng::new(42).shuffle(&mut order);
    let want: Vec<f32> = order[35..].iter().map(|&i| i as f32).collect();
    assert_eq!(b.features, want);
}

#[test]
fn split_edge_cases() {
    let (a, b) = indexed(2).split(0.01, 0).unwrap();
    assert_eq!((a.len(), b.len()), (1, 1));
    let (a, b) = indexed(10).split(0.99, 0).unwrap();
    assert_eq!((a.len(), b.len()), (1, 9));
    for f in [0.0, 1.0, -0.1, f64::NAN] {
        let e = indexed(10).split(f, 0).unwrap_err();
        assert!(matches!(e, DataError::Split { .. }), "{e}");
    }
    let m = message(&indexed(1).split(0.5, 0).unwrap_err());
    assert!(m.contains("indexed has 1 example(s)"), "{m}");
}

#[test]
fn subset_takes_examples_in_order() {
    let d = indexed(5);
    let s = d.subset(&[4, 1, 1]);
    assert_eq!(s.features, [4.0, 1.0, 1.0]);
    assert!(matches!(&s.targets, Targets::Values { values, .. } if values == &[40.0, 10.0, 10.0]));
    assert_eq!(d.subset(&[0, 1, 2, 3, 4]), d);
}

#[test]
fn digests_are_stable() {
    // Expected values computed with Python's hashlib and struct from the layout documented
    // on Dataset::digest.
    let classes = Dataset::new(
        vec![0.5, -1.25, 3.0, 1e-3],
        vec![2],
        Targets::Classes {
            labels: vec![1, 0],
            names: vec!["no".into(), "yes".into()],
        },
        None,
        "a",
    )
    .unwrap();
    assert_eq!(
        classes.digest(),
        "692fb42de85abb9be656b6b438f690e8c06608c96160a263f74c46650cc9af73"
    );
    let values = Dataset::new(
        vec![1.0, 2.0, 3.0],
        vec![1],
        Targets::Values {
            values: vec![0.5, 2.5, -4.0],
            width: 1,
            names: vec!["t".into()],
        },
        Some(vec!["x".into()]),
        "b",
    )
    .unwrap();
    assert_eq!(
        values.digest(),
        "772a318fec3429096259ebfc823b2630a9e29879ce689026510096f28e5d1d89"
    );
    // Not the source or feature names; any value changes it.
    let mut moved = values.clone();
    moved.source = "elsewhere".into();
    moved.feature_names = None;
    assert_eq!(moved.digest(), values.digest());
    moved.features[2] = 3.0001;
    assert_ne!(moved.digest(), values.digest());
}

// ---------------------------------------------------------------------------- DataSource

#[test]
fn data_source_parses_with_defaults_and_rejects_unknown_fields() {
    let s: DataSource = serde_json::from_str(r#"{"format":"mnist","path":"data/mnist"}"#).unwrap();
    assert_eq!(
        s,
        DataSource::Mnist {
            path: "data/mnist".into()
        }
    );
    let s: DataSource = serde_json::from_str(
        r#"{"format":"csv","path":"a.csv","target":"y","task":"classification",
            "test":"b.csv","test_fraction":0.25,"split_seed":9}"#,
    )
    .unwrap();
    assert_eq!(
        s,
        DataSource::Csv {
            path: "a.csv".into(),
            target: "y".into(),
            task: Task::Classification,
            test: Some("b.csv".into()),
            test_fraction: 0.25,
            split_seed: 9
        }
    );
    let s: DataSource = serde_json::from_str(r#"{"format":"images","path":"pics"}"#).unwrap();
    assert_eq!(
        s,
        DataSource::Images {
            path: "pics".into(),
            channels: 1,
            test_fraction: 0.2,
            split_seed: 0
        }
    );
    let e = serde_json::from_str::<DataSource>(r#"{"format":"mnist","path":"m","seed":1}"#)
        .unwrap_err();
    assert!(e.to_string().contains("unknown field `seed`"), "{e}");
    let e = serde_json::from_str::<DataSource>(r#"{"format":"parquet","path":"m"}"#).unwrap_err();
    assert!(e.to_string().contains("unknown variant `parquet`"), "{e}");
}

#[test]
fn data_source_loads_relative_to_root() {
    let root = temp_dir("source");
    // MNIST: the committed slice as both halves.
    let m = root.join("mnist");
    std::fs::create_dir(&m).unwrap();
    let images = idx::read(&slice_dir().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = idx::read(&slice_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    for prefix in ["train", "t10k"] {
        let p = m.join(format!("{prefix}-images-idx3-ubyte"));
        idx::write(&p, &images.dims, &images.data, false).unwrap();
        let p = m.join(format!("{prefix}-labels-idx1-ubyte"));
        idx::write(&p, &labels.dims, &labels.data, false).unwrap();
    }
    let s = DataSource::Mnist {
        path: "mnist".into(),
    }
    .load(&root)
    .unwrap();
    assert_eq!((s.train.len(), s.test.len()), (1000, 1000));
    assert_eq!(s.train.digest(), s.test.digest());

    // CSV split by fraction.
    let mut text = String::from("a,b,y\n");
    for i in 0..20 {
        text.push_str(&format!("{i},{},{}\n", 2 * i, i % 3));
    }
    write(&root.join("all.csv"), text.as_bytes());
    let src = DataSource::Csv {
        path: "all.csv".into(),
        target: "y".into(),
        task: Task::Classification,
        test: None,
        test_fraction: 0.25,
        split_seed: 1,
    };
    let s = src.load(&root).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (15, 5));
    assert_eq!(s.train.example_shape, [2]);
    assert_eq!(s, src.load(&root).unwrap());

    // CSV with a test file whose classes differ: both get the union, renumbered.
    write(&root.join("train.csv"), b"a,y\n1,cat\n2,dog\n");
    write(&root.join("test.csv"), b"a,y\n3,bird\n4,dog\n");
    let s = DataSource::Csv {
        path: "train.csv".into(),
        target: "y".into(),
        task: Task::Classification,
        test: Some("test.csv".into()),
        test_fraction: 0.2,
        split_seed: 0,
    }
    .load(&root)
    .unwrap();
    let names: Vec<String> = ["bird", "cat", "dog"].map(String::from).to_vec();
    assert_eq!(
        s.train.targets,
        Targets::Classes {
            labels: vec![1, 2],
            names: names.clone()
        }
    );
    assert_eq!(
        s.test.targets,
        Targets::Classes {
            labels: vec![0, 2],
            names
        }
    );
    // A test file with other columns is refused.
    write(&root.join("other.csv"), b"z,y\n3,bird\n");
    let e = DataSource::Csv {
        path: "train.csv".into(),
        target: "y".into(),
        task: Task::Classification,
        test: Some("other.csv".into()),
        test_fraction: 0.2,
        split_seed: 0,
    }
    .load(&root)
    .unwrap_err();
    assert!(
        message(&e).contains("feature columns [\"z\"] differ"),
        "{e}"
    );

    // Images: train/ without test/ is ambiguous.
    std::fs::create_dir_all(root.join("pics/train/x")).unwrap();
    let e = DataSource::Images {
        path: "pics".into(),
        channels: 1,
        test_fraction: 0.2,
        split_seed: 0,
    }
    .load(&root)
    .unwrap_err();
    assert!(
        message(&e).contains("has a `train` folder but no `test` folder"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(root);
}

// ---------------------------------------------------------------------------------- text

#[test]
fn text_folders_load_in_class_then_name_order_with_raw_bytes() {
    let root = temp_dir("text");
    let dir = root.join("mail");
    for (class, file, body) in [
        ("spam", "b.txt", &b"WIN \xff money"[..]),
        ("ham", "z.txt", b"see you at 3"),
        ("ham", "a.eml", b"hello"),
        ("spam", ".hidden", b"ignored"),
    ] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        write(&dir.join(class).join(file), body);
    }
    let set = text::load(&dir).unwrap();
    assert_eq!(set.names, ["ham", "spam"]);
    assert_eq!(set.labels, [0, 0, 1]);
    assert_eq!(
        set.texts,
        [
            b"hello".to_vec(),
            b"see you at 3".to_vec(),
            b"WIN \xff money".to_vec()
        ]
    );
    // The digest follows the content, not the file names.
    let before = set.digest();
    std::fs::rename(dir.join("ham/z.txt"), dir.join("ham/y.txt")).unwrap();
    assert_eq!(text::load(&dir).unwrap().digest(), before);
    write(&dir.join("ham/y.txt"), b"see you at 4");
    assert_ne!(text::load(&dir).unwrap().digest(), before);

    // Errors name the folder and what was expected.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let e = text::load(&dir).unwrap_err();
    assert!(
        message(&e).contains("class folder `empty` holds no files"),
        "{e}"
    );
    let e = text::load(&root.join("nowhere")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    let flat = root.join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    write(&flat.join("a.txt"), b"x");
    let e = text::load(&flat).unwrap_err();
    assert!(message(&e).contains("no class folders"), "{e}");
}

#[test]
fn text_sources_are_embedded_then_split_like_any_data_set() {
    let root = temp_dir("text-source");
    for i in 0..10u8 {
        let class = if i % 2 == 0 { "even" } else { "odd" };
        std::fs::create_dir_all(root.join("t").join(class)).unwrap();
        write(
            &root.join("t").join(class).join(format!("{i}.txt")),
            &vec![b'x'; usize::from(i) + 1],
        );
    }
    let src: DataSource = toml::from_str(
        r#"format = "text"
           path = "t"
           test_fraction = 0.3
           split_seed = 4
           [embed]
           function = "spam"
           weights = "minilm/minilm.safetensors""#,
    )
    .unwrap();
    let DataSource::Text { embed, .. } = &src else {
        panic!("{src:?}")
    };
    assert_eq!(embed.output, "embedding");
    // Without an embedder a text source cannot load, and says why.
    let e = src.load(&root).unwrap_err();
    assert!(message(&e).contains("embedded by function `spam`"), "{e}");
    // A stand-in embedder: (length, length²) per text.
    let splits = src
        .load_with(&root, &mut |set, how| {
            assert_eq!(how.function, "spam");
            Ok(set
                .texts
                .iter()
                .flat_map(|t| [t.len() as f32, (t.len() * t.len()) as f32])
                .collect())
        })
        .unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (7, 3));
    assert_eq!(splits.test.example_shape, [2]);
    // The test set is exactly the seeded split's indices of the loaded order
    // (even: 0 2 4 6 8, then odd: 1 3 5 7 9, as files sort by name).
    let order = [0usize, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let (_, test) = split_indices(10, 0.3, 4, "t").unwrap();
    for (k, &i) in test.iter().enumerate() {
        let len = (order[i] + 1) as f32;
        assert_eq!(splits.test.example(k), [len, len * len]);
    }
    assert_eq!(src.held_out(&root), Some((0.3, 4)));
    // An embedder giving a ragged result is refused.
    let e = src
        .load_with(&root, &mut |_, _| Ok(vec![0.0; 7]))
        .unwrap_err();
    assert!(message(&e).contains("7 values for 10 texts"), "{e}");
}
