//! Tests of decoding, channel conversion and resizing against hand-computed values. They
//! touch no WIT import, so they run natively:
//! `cargo test --manifest-path guest/Cargo.toml -p tensorlet-sdk --target x86_64-unknown-linux-gnu`.

#![allow(clippy::unwrap_used)]

use super::*;

/// Encodes a PNG of `width` × `height` with the given color type, depth and raw rows.
fn png_bytes(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(&[u8], Option<&[u8]>)>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if let Some((plte, trns)) = palette {
            encoder.set_palette(plte.to_vec());
            if let Some(trns) = trns {
                encoder.set_trns(trns.to_vec());
            }
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
    }
    out
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6,
            "sample {i}: got {g}, want {w} ({got:?})"
        );
    }
}

fn is_invalid_input(r: Result<Image>) -> bool {
    matches!(r, Err(Error::InvalidInput(_)))
}

#[test]
fn png_gray8() {
    let bytes = png_bytes(
        3,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
        &[0, 51, 255, 102, 153, 204],
    );
    let img = decode(&bytes).unwrap();
    assert_eq!((img.channels(), img.height(), img.width()), (1, 2, 3));
    assert_close(img.data(), &[0.0, 0.2, 1.0, 0.4, 0.6, 0.8]);
}

#[test]
fn png_gray1_is_scaled_to_8_bits() {
    // One row of 8 pixels, 1 bit each: 1010_0000.
    let bytes = png_bytes(
        8,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::One,
        None,
        &[0b1010_0000],
    );
    let img = decode(&bytes).unwrap();
    assert_close(img.data(), &[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn png_gray_alpha_drops_alpha() {
    let bytes = png_bytes(
        2,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        None,
        &[255, 0, 51, 255],
    );
    let img = decode(&bytes).unwrap();
    assert_eq!(img.channels(), 1);
    assert_close(img.data(), &[1.0, 0.2]);
}

#[test]
fn png_rgb8_is_planar() {
    // Two pixels: (255, 0, 51) and (102, 255, 0).
    let bytes = png_bytes(
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &[255, 0, 51, 102, 255, 0],
    );
    let img = decode(&bytes).unwrap();
    assert_eq!((img.channels(), img.height(), img.width()), (3, 1, 2));
    assert_close(img.data(), &[1.0, 0.4, 0.0, 1.0, 0.2, 0.0]);
}

#[test]
fn png_rgba16_big_endian_and_alpha_dropped() {
    // One pixel: R = 65535, G = 0x8000, B = 0, A = 0x1234.
    let bytes = png_bytes(
        1,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        None,
        &[0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x12, 0x34],
    );
    let img = decode(&bytes).unwrap();
    assert_eq!(img.channels(), 3);
    assert_close(img.data(), &[1.0, 32768.0 / 65535.0, 0.0]);
}

#[test]
fn png_gray16() {
    let bytes = png_bytes(
        2,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &[0x00, 0x01, 0xff, 0xff],
    );
    let img = decode(&bytes).unwrap();
    assert_close(img.data(), &[1.0 / 65535.0, 1.0]);
}

#[test]
fn png_palette_with_trns_expands_to_rgb() {
    let plte = [255, 0, 0, 0, 0, 255];
    let trns = [0];
    // 4-bit indices 1, 0.
    let bytes = png_bytes(
        2,
        1,
        png::ColorType::Indexed,
        png::BitDepth::Four,
        Some((&plte, Some(&trns))),
        &[0x10],
    );
    let img = decode(&bytes).unwrap();
    assert_eq!((img.channels(), img.width()), (3, 2));
    assert_close(img.data(), &[0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn corrupt_png_is_invalid_input() {
    let good = png_bytes(
        4,
        4,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
        &[7; 16],
    );
    // Cut inside the header, the IHDR chunk and the image data.
    for len in [8, 12, 20, 33, good.len() - 13] {
        assert!(is_invalid_input(decode(&good[..len])), "truncated to {len}");
    }
    // Only the trailing IEND chunk is cut: the pixels are all there, so either outcome is
    // fine as long as there is no panic.
    let _ = decode(&good[..good.len() - 1]);
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0xff;
    assert!(is_invalid_input(decode(&flipped)));
    let mut garbage = PNG_SIGNATURE.to_vec();
    garbage.extend_from_slice(&[0xde; 64]);
    assert!(is_invalid_input(decode(&garbage)));
}

#[test]
fn pgm_8bit_with_comments() {
    let mut bytes = b"P5\n# a comment\n3 1 # another\n255\n".to_vec();
    bytes.extend_from_slice(&[0, 51, 255]);
    let img = decode(&bytes).unwrap();
    assert_eq!((img.channels(), img.height(), img.width()), (1, 1, 3));
    assert_close(img.data(), &[0.0, 0.2, 1.0]);
}

#[test]
fn pgm_small_maxval() {
    let mut bytes = b"P5 2 1 15 ".to_vec();
    bytes.extend_from_slice(&[3, 15]);
    assert_close(decode(&bytes).unwrap().data(), &[0.2, 1.0]);
}

#[test]
fn pgm_16bit_big_endian() {
    let mut bytes = b"P5 2 1 1000\n".to_vec();
    bytes.extend_from_slice(&[0x01, 0xf4, 0x03, 0xe8]); // 500, 1000
    assert_close(decode(&bytes).unwrap().data(), &[0.5, 1.0]);
}

#[test]
fn bad_pgm_is_invalid_input() {
    let cases: [&[u8]; 8] = [
        b"P5 2 1 255\n\x00",       // truncated raster
        b"P5 2 1 0\n\x00\x00",     // maxval 0
        b"P5 2 1 65536\n\x00\x00", // maxval too large
        b"P5 2 x 255\n\x00\x00",   // non-numeric height
        b"P5 0 1 255\n",           // empty
        b"P5 2 1 15\n\x03\x10",    // sample above maxval
        b"P5 2 1 255",             // no raster separator
        b"P2 2 1 255\n0 1",        // ASCII PGM
    ];
    for bytes in cases {
        assert!(
            is_invalid_input(decode(bytes)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(is_invalid_input(decode(b"")));
    assert!(is_invalid_input(decode(b"GIF89a....")));
    assert!(matches!(
        decode(b"P5 100000 100000 255\n"),
        Err(Error::LimitExceeded(_))
    ));
}

#[test]
fn luma_and_replication() {
    // One RGB pixel (1.0, 0.5, 0.0) and one (0.2, 0.4, 1.0).
    let rgb = Image::from_planar(3, 1, 2, vec![1.0, 0.2, 0.5, 0.4, 0.0, 1.0]).unwrap();
    let gray = rgb.to_channels(1).unwrap();
    assert_close(
        gray.data(),
        &[0.299 + 0.587 * 0.5, 0.299 * 0.2 + 0.587 * 0.4 + 0.114],
    );
    let back = gray.to_channels(3).unwrap();
    assert_eq!(back.channels(), 3);
    assert_eq!(&back.data()[0..2], gray.data());
    assert_eq!(&back.data()[2..4], gray.data());
    assert_eq!(&back.data()[4..6], gray.data());
    assert!(matches!(rgb.to_channels(2), Err(Error::Unsupported(_))));
}

#[test]
fn axis_taps_follow_half_pixel_centers() {
    // 2 -> 4: s = (d + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
    let taps = axis_taps(2, 4);
    assert_eq!(
        taps,
        vec![(0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)]
    );
    // 3 -> 2: s = (d + 0.5)·1.5 - 0.5 = 0.25, 1.75.
    assert_eq!(axis_taps(3, 2), vec![(0, 1, 0.25), (1, 2, 0.75)]);
}

#[test]
fn resize_upsamples_bilinearly() {
    // p[y][x] = 2y + x is linear, so bilinear interpolation reproduces it exactly at the
    // clamped source coordinates r = [0, 0.25, 0.75, 1]: out[i][j] = 2 r[i] + r[j].
    let img = Image::from_planar(1, 2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    let out = img.resize(4, 4).unwrap();
    let r = [0.0f32, 0.25, 0.75, 1.0];
    let want: Vec<f32> = (0..16).map(|k| 2.0 * r[k / 4] + r[k % 4]).collect();
    assert_close(out.data(), &want);
}

#[test]
fn resize_downsamples_without_antialiasing() {
    // 1 × 4 -> 1 × 2: s = 0.5, 2.5, the means of neighbouring pairs.
    let img = Image::from_planar(1, 1, 4, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    assert_close(img.resize(1, 2).unwrap().data(), &[0.5, 2.5]);
    // 3 × 1 -> 2 × 1: s = 0.25, 1.75.
    let img = Image::from_planar(1, 3, 1, vec![0.0, 10.0, 20.0]).unwrap();
    assert_close(img.resize(2, 1).unwrap().data(), &[2.5, 17.5]);
}

#[test]
fn resize_keeps_channels_apart() {
    let img = Image::from_planar(2, 1, 2, vec![0.0, 1.0, 10.0, 20.0]).unwrap();
    let out = img.resize(1, 4).unwrap();
    assert_close(out.data(), &[0.0, 0.25, 0.75, 1.0, 10.0, 12.5, 17.5, 20.0]);
    assert_eq!(img.resize(1, 2).unwrap(), img);
    assert!(is_invalid_input(img.resize(0, 2)));
}

#[test]
fn prepare_runs_the_whole_pipeline() {
    // A 2 × 2 RGB PNG of pure red, green, blue and white, to 1 channel at 1 × 1:
    // s = (0 + 0.5)·2 - 0.5 = 0.5 on both axes, the mean of the four lumas.
    let bytes = png_bytes(
        2,
        2,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255],
    );
    let img = prepare(&bytes, 1, 1, 1).unwrap();
    assert_close(img.data(), &[(0.299 + 0.587 + 0.114 + 1.0) / 4.0]);
}

#[test]
fn from_planar_checks_the_length() {
    assert!(is_invalid_input(Image::from_planar(1, 2, 2, vec![0.0; 3])));
    assert!(is_invalid_input(Image::from_planar(0, 2, 2, vec![])));
}
