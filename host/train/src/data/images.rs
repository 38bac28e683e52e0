//! Users' own images: a folder with one sub-folder per class (`dir/cat/*.png`,
//! `dir/dog/*.png`), decoded natively with the `png` crate into `[channels, height, width]`
//! examples with values in [0, 1].

use super::{DataError, Dataset, Targets, class_folders, entries};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Whether `p`'s extension is `png` in any case.
fn is_png(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("png"))
}

/// A decoded image: `channels` planes of `height * width` values in [0, 1].
struct Decoded {
    width: usize,
    height: usize,
    /// Channel-major (CHW).
    values: Vec<f32>,
}

/// Decodes the PNG at `path` and converts it to `channels` (1 or 3) planes: palette and
/// low-bit-depth images are expanded, alpha is dropped, colour becomes gray as
/// 0.299 R + 0.587 G + 0.114 B, gray is repeated into R, G and B; values are divided by the
/// maximum sample value (255 or 65535).
fn decode(path: &Path, channels: usize) -> Result<Decoded, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let bad = |e: png::DecodingError| DataError::format(path, format!("not a valid PNG: {e}"));
    let mut reader = decoder.read_info().map_err(bad)?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        DataError::format(path, "PNG is too large to decode in memory".to_string())
    })?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let samples_per_pixel = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(DataError::format(
                path,
                "palette PNG was not expanded to RGB".to_string(),
            ));
        }
    };
    let (sixteen, max) = match info.bit_depth {
        png::BitDepth::Eight => (false, 255.0f32),
        png::BitDepth::Sixteen => (true, 65535.0f32),
        other => {
            return Err(DataError::format(
                path,
                format!("PNG bit depth {other:?} was not expanded to 8 bits"),
            ));
        }
    };
    let line = info.line_size;
    let sample = |y: usize, x: usize, s: usize| -> f32 {
        let i = y * line;
        if sixteen {
            let k = i + 2 * (x * samples_per_pixel + s);
            f32::from(u16::from_be_bytes([buf[k], buf[k + 1]]))
        } else {
            f32::from(buf[i + x * samples_per_pixel + s])
        }
    };
    let plane = width * height;
    let mut values = vec![0.0f32; channels * plane];
    for y in 0..height {
        for x in 0..width {
            let p = y * width + x;
            if samples_per_pixel < 3 {
                let g = sample(y, x, 0) / max;
                for c in 0..channels {
                    values[c * plane + p] = g;
                }
            } else {
                let (r, g, b) = (sample(y, x, 0), sample(y, x, 1), sample(y, x, 2));
                if channels == 1 {
                    values[p] = (0.299 * r + 0.587 * g + 0.114 * b) / max;
                } else {
                    values[p] = r / max;
                    values[plane + p] = g / max;
                    values[2 * plane + p] = b / max;
                }
            }
        }
    }
    Ok(Decoded {
        width,
        height,
        values,
    })
}

/// Loads `dir/<class>/*.png`: every sub-folder is a class (classes sorted by name,
/// numerically when all names are numbers; names starting with `.` are skipped), its `.png`
/// files (sorted by name) the examples; other files are ignored. Images are converted to
/// `channels` (1: gray 0.299 R + 0.587 G + 0.114 B, 3: RGB; alpha dropped; palettes and low
/// bit depths expanded) and scaled by the maximum sample value to [0, 1]. The example shape
/// is `[channels, height, width]`. Errors: `channels` other than 1 or 3, no class folder, a
/// class folder without PNG files, an undecodable PNG, an image whose size differs from the
/// first one's (each naming the folder or file).
pub fn load(dir: &Path, channels: usize) -> Result<Dataset, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::format(
            dir,
            format!("cannot load images with {channels} channels: expected 1 (gray) or 3 (RGB)"),
        ));
    }
    let class_dirs = class_folders(dir, "PNG images")?;
    let names: Vec<String> = class_dirs.iter().map(|(n, _)| n.clone()).collect();

    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut size: Option<(usize, usize, PathBuf)> = None;
    for (label, (name, class_dir)) in class_dirs.iter().enumerate() {
        let all = entries(class_dir)?;
        let pngs: Vec<&PathBuf> = all.iter().filter(|p| p.is_file() && is_png(p)).collect();
        if pngs.is_empty() {
            let found = match all.len() {
                0 => "it is empty".to_string(),
                n => format!("it holds {n} other entries"),
            };
            return Err(DataError::format(
                class_dir,
                format!(
                    "class folder `{name}` holds no .png files ({found}): every class needs at \
                     least one PNG image"
                ),
            ));
        }
        for p in pngs {
            let img = decode(p, channels)?;
            match &size {
                None => size = Some((img.width, img.height, p.clone())),
                Some((w, h, first)) if (*w, *h) != (img.width, img.height) => {
                    return Err(DataError::format(
                        p,
                        format!(
                            "image is {}x{} (width x height), but {} is {w}x{h}: every image \
                             must have the same size",
                            img.width,
                            img.height,
                            first.display()
                        ),
                    ));
                }
                Some(_) => {}
            }
            features.extend_from_slice(&img.values);
            labels.push(label as u32);
        }
    }
    let (w, h) = size.map_or((0, 0), |(w, h, _)| (w, h));
    Dataset::new(
        features,
        vec![channels, h, w],
        Targets::Classes { labels, names },
        None,
        dir.display().to_string(),
    )
}
