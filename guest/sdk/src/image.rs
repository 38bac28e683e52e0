//! Image decoding and preprocessing inside the sandbox: PNG and binary PGM bytes in, a
//! planar float image (and from it an NCHW tensor `[1, C, H, W]`) out.
//!
//! The pipeline is fixed and exact, so that an independent reference (numpy) computes the
//! same numbers. [`prepare`] runs these steps in this order, all in `f32` except where noted:
//!
//! 1. **Decode.** PNG (any color type: gray, gray+alpha, RGB, RGBA, palette; bit depths
//!    1, 2, 4, 8, 16) is decoded with the `png` crate's `EXPAND` transformation: palette
//!    entries become RGB, `tRNS` becomes an alpha channel, gray below 8 bits is scaled up to
//!    8 bits (`v · 255 / (2^depth − 1)`, as libpng does). 16-bit samples stay 16-bit.
//!    Binary PGM (`P5`, `maxval` 1..=65535; one byte per sample if `maxval` < 256, else two
//!    bytes big-endian; `#` comments allowed in the header) is decoded as is.
//! 2. **Scale to [0, 1].** Every sample `v` becomes `v / maxval`, where `maxval` is 255
//!    for 8-bit PNG, 65535 for 16-bit PNG and the header's `maxval` for PGM (a PGM sample
//!    above `maxval` is an error).
//! 3. **Drop alpha.** Alpha is discarded, not composited: gray+alpha becomes gray, RGBA
//!    becomes RGB.
//! 4. **Channels.** To get 1 channel from RGB, use ITU-R BT.601 luma:
//!    `Y = 0.299·R + 0.587·G + 0.114·B`. To get 3 channels from gray, replicate it:
//!    `R = G = B = Y`. Other conversions are `unsupported`.
//! 5. **Resize.** Bilinear interpolation with half-pixel centers (PyTorch's
//!    `interpolate(mode="bilinear", align_corners=False, antialias=False)`), separable
//!    per axis. For an axis of `n_in` source and `n_out` destination pixels, destination
//!    index `d` samples source coordinate
//!    `s = clamp((d + 0.5) · n_in / n_out − 0.5, 0, n_in − 1)`,
//!    with `i0 = floor(s)`, `i1 = min(i0 + 1, n_in − 1)`, `f = s − i0`. The output is
//!    `(1 − fy)·((1 − fx)·p[y0][x0] + fx·p[y0][x1]) + fy·((1 − fx)·p[y1][x0] + fx·p[y1][x1])`.
//!    Coordinates, weights and this sum are computed in `f64`, then rounded to `f32`. When
//!    the size is unchanged the image is copied exactly. There is no antialiasing when
//!    shrinking.
//! 6. **Layout.** The result is planar (C, H, W); [`Image::to_tensor`] makes it the NCHW
//!    tensor `[1, C, H, W]`.
//!
//! Bad, truncated or unsupported bytes give [`Error::InvalidInput`] (or `limit-exceeded`
//! for images above [`MAX_PIXELS`]) with a message saying what is wrong; nothing here
//! panics on input data.

use std::io::Cursor;

use crate::{Error, Result, Tensor};

/// The largest image, in pixels (width × height), that [`decode`] accepts: 16 Mi pixels,
/// e.g. 4096 × 4096.
pub const MAX_PIXELS: u64 = 1 << 24;

/// The 8-byte signature every PNG file starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A decoded image: `channels` planes of `height` × `width` `f32` samples, planar
/// (C, H, W) and row-major, normally in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Image {
    /// An image from planar (C, H, W) samples; `invalid-input` unless `data` holds exactly
    /// `channels · height · width` samples and every dimension is positive.
    pub fn from_planar(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self> {
        let expected = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        match expected {
            Some(n) if n == data.len() && n > 0 => Ok(Self {
                channels,
                height,
                width,
                data,
            }),
            _ => Err(Error::invalid_input(format!(
                "an image of {channels} channels × {height} × {width} needs \
                 {channels}·{height}·{width} samples, got {}",
                data.len()
            ))),
        }
    }

    /// The number of channels: 1 (gray) or 3 (RGB) after [`decode`].
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The samples, planar (C, H, W), row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The samples, planar (C, H, W), row-major, by value.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// One channel plane (H × W samples, row-major).
    fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    /// This image with `channels` channels: unchanged if it already has them, BT.601 luma
    /// `0.299·R + 0.587·G + 0.114·B` for RGB → 1, replication for gray → 3;
    /// `unsupported` otherwise.
    pub fn to_channels(&self, channels: usize) -> Result<Image> {
        let n = self.height * self.width;
        let data = match (self.channels, channels) {
            (from, to) if from == to => self.data.clone(),
            (3, 1) => {
                let (r, g, b) = (self.plane(0), self.plane(1), self.plane(2));
                (0..n)
                    .map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i])
                    .collect()
            }
            (1, 3) => self.data.repeat(3),
            (from, to) => {
                return Err(Error::unsupported(format!(
                    "cannot convert an image of {from} channels to {to} channels \
                     (supported: 3 -> 1 by luma, 1 -> 3 by replication)"
                )));
            }
        };
        Ok(Image {
            channels,
            height: self.height,
            width: self.width,
            data,
        })
    }

    /// This image resized to `height` × `width` by bilinear interpolation with half-pixel
    /// centers (see the module docs for the exact formula); `invalid-input` for a zero size.
    pub fn resize(&self, height: usize, width: usize) -> Result<Image> {
        if height == 0 || width == 0 {
            return Err(Error::invalid_input(format!(
                "cannot resize an image to {height} × {width}"
            )));
        }
        if (height, width) == (self.height, self.width) {
            return Ok(self.clone());
        }
        let too_big = (height as u64)
            .checked_mul(width as u64)
            .is_none_or(|n| n > MAX_PIXELS);
        if too_big {
            return Err(Error::limit_exceeded(format!(
                "resizing to {height} × {width} exceeds the limit of {MAX_PIXELS} pixels"
            )));
        }
        let ys = axis_taps(self.height, height);
        let xs = axis_taps(self.width, width);
        let mut data = Vec::with_capacity(self.channels * height * width);
        for c in 0..self.channels {
            let p = self.plane(c);
            for &(y0, y1, fy) in &ys {
                let (row0, row1) = (&p[y0 * self.width..], &p[y1 * self.width..]);
                for &(x0, x1, fx) in &xs {
                    let top = (1.0 - fx) * f64::from(row0[x0]) + fx * f64::from(row0[x1]);
                    let bottom = (1.0 - fx) * f64::from(row1[x0]) + fx * f64::from(row1[x1]);
                    data.push(((1.0 - fy) * top + fy * bottom) as f32);
                }
            }
        }
        Ok(Image {
            channels: self.channels,
            height,
            width,
            data,
        })
    }

    /// The image as an NCHW f32 tensor `[1, C, H, W]` in host memory.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let dim = |d: usize| {
            u32::try_from(d).map_err(|_| {
                Error::limit_exceeded(format!("image dimension {d} does not fit in u32"))
            })
        };
        let shape = [1, dim(self.channels)?, dim(self.height)?, dim(self.width)?];
        Tensor::from_f32(&shape, &self.data)
    }
}

/// For each of `n_out` destination indices on an axis of `n_in` source pixels: the two
/// source indices and the weight of the second, `s = clamp((d + 0.5)·n_in/n_out − 0.5,
/// 0, n_in − 1)`, `i0 = floor(s)`, `i1 = min(i0 + 1, n_in − 1)`, `f = s − i0`.
fn axis_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f64)> {
    let scale = n_in as f64 / n_out as f64;
    let last = n_in - 1;
    (0..n_out)
        .map(|d| {
            let s = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, last as f64);
            let i0 = (s.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            (i0, i1, s - i0 as f64)
        })
        .collect()
}

/// Decodes, converts to `channels` channels and resizes to `height` × `width`: steps 1–5
/// of the module docs, ready for [`Image::to_tensor`].
pub fn prepare(bytes: &[u8], channels: usize, height: usize, width: usize) -> Result<Image> {
    decode(bytes)?.to_channels(channels)?.resize(height, width)
}

/// Decodes a PNG or binary PGM (`P5`) file, detected by its first bytes, into an image of
/// 1 (gray) or 3 (RGB) channels scaled to [0, 1], alpha dropped.
pub fn decode(bytes: &[u8]) -> Result<Image> {
    if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes)
    } else if bytes.starts_with(b"P5") {
        decode_pgm(bytes)
    } else if bytes.len() >= 2 && bytes[0] == b'P' && bytes[1].is_ascii_digit() {
        Err(Error::invalid_input(format!(
            "unsupported Netpbm format `P{}`: only binary PGM (`P5`) is supported",
            char::from(bytes[1])
        )))
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(Error::invalid_input(format!(
            "image bytes are neither PNG nor binary PGM (`P5`): {} bytes starting with [{}]",
            bytes.len(),
            head.join(" ")
        )))
    }
}

/// Checks `width × height` against [`MAX_PIXELS`].
fn check_size(format: &str, width: u64, height: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::invalid_input(format!(
            "{format} image has an empty size {width} × {height}"
        )));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(Error::limit_exceeded(format!(
            "{format} image of {width} × {height} pixels exceeds the limit of {MAX_PIXELS} pixels"
        )));
    }
    Ok(())
}

/// Decodes a PNG with `EXPAND`: 8- or 16-bit gray, gray+alpha, RGB or RGBA samples.
fn decode_png(bytes: &[u8]) -> Result<Image> {
    let corrupt = |e: png::DecodingError| Error::invalid_input(format!("invalid PNG: {e}"));
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (width, height) = reader.info().size();
    check_size("PNG", u64::from(width), u64::from(height))?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        Error::limit_exceeded(format!("PNG image of {width} × {height} is too large"))
    })?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    let (samples, color_channels) = match frame.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => {
            return Err(Error::internal(
                "PNG palette was not expanded to RGB".to_owned(),
            ));
        }
    };
    let (bytes_per_sample, maxval) = match frame.bit_depth {
        png::BitDepth::Eight => (1, 255.0),
        png::BitDepth::Sixteen => (2, 65535.0),
        other => {
            return Err(Error::internal(format!(
                "PNG bit depth {other:?} was not expanded to 8 bits"
            )));
        }
    };
    let (w, h) = (frame.width as usize, frame.height as usize);
    let line = frame.line_size;
    if line < w * samples * bytes_per_sample || buf.len() < line * h {
        return Err(Error::internal(format!(
            "PNG decoder returned {} bytes for {w} × {h} pixels of {samples} samples",
            buf.len()
        )));
    }
    let mut data = vec![0f32; color_channels * h * w];
    for y in 0..h {
        let row = &buf[y * line..];
        for x in 0..w {
            for c in 0..color_channels {
                let i = (x * samples + c) * bytes_per_sample;
                let v = if bytes_per_sample == 1 {
                    f32::from(row[i])
                } else {
                    f32::from(u16::from_be_bytes([row[i], row[i + 1]]))
                };
                data[(c * h + y) * w + x] = v / maxval;
            }
        }
    }
    Image::from_planar(color_channels, h, w, data)
}

/// Decodes a binary PGM (`P5`): header `P5 <width> <height> <maxval>`, tokens separated by
/// whitespace and `#` comments, one whitespace byte, then the raster.
fn decode_pgm(bytes: &[u8]) -> Result<Image> {
    let mut pos = 2;
    let mut fields = [0u64; 3];
    for (field, name) in fields.iter_mut().zip(["width", "height", "maxval"]) {
        *field = pgm_number(bytes, &mut pos, name)?;
    }
    let [width, height, maxval] = fields;
    if !(1..=65535).contains(&maxval) {
        return Err(Error::invalid_input(format!(
            "PGM maxval {maxval} is outside 1..=65535"
        )));
    }
    check_size("PGM", width, height)?;
    // Exactly one whitespace byte separates the header from the raster.
    match bytes.get(pos) {
        Some(b) if b.is_ascii_whitespace() => pos += 1,
        _ => {
            return Err(Error::invalid_input(
                "PGM header must end with one whitespace byte before the raster".to_owned(),
            ));
        }
    }
    let (w, h) = (width as usize, height as usize);
    let bytes_per_sample = if maxval < 256 { 1 } else { 2 };
    let needed = w * h * bytes_per_sample;
    let raster = bytes.get(pos..pos + needed).ok_or_else(|| {
        Error::invalid_input(format!(
            "PGM raster is truncated: {w} × {h} pixels of {bytes_per_sample} byte(s) need \
             {needed} bytes, got {}",
            bytes.len() - pos
        ))
    })?;
    let scale = maxval as f32;
    let mut data = Vec::with_capacity(w * h);
    for (i, sample) in raster.chunks_exact(bytes_per_sample).enumerate() {
        let v = match sample {
            [b] => u16::from(*b),
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        };
        if u64::from(v) > maxval {
            return Err(Error::invalid_input(format!(
                "PGM sample {v} at pixel ({}, {}) exceeds maxval {maxval}",
                i % w,
                i / w
            )));
        }
        data.push(f32::from(v) / scale);
    }
    Image::from_planar(1, h, w, data)
}

/// Reads one unsigned decimal header field of a PGM, skipping whitespace and comments.
fn pgm_number(bytes: &[u8], pos: &mut usize, name: &str) -> Result<u64> {
    loop {
        match bytes.get(*pos) {
            Some(b) if b.is_ascii_whitespace() => *pos += 1,
            Some(b'#') => {
                while bytes.get(*pos).is_some_and(|&b| b != b'\n' && b != b'\r') {
                    *pos += 1;
                }
            }
            _ => break,
        }
    }
    let start = *pos;
    let mut value = 0u64;
    while let Some(&b) = bytes.get(*pos).filter(|b| b.is_ascii_digit()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|&v| v <= u64::from(u32::MAX))
            .ok_or_else(|| Error::invalid_input(format!("PGM {name} is too large")))?;
        *pos += 1;
    }
    if *pos == start {
        return Err(Error::invalid_input(format!(
            "PGM header is malformed: expected the {name} as a decimal number at byte {start}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
