//! IDX files, the format MNIST is published in: a 4-byte magic (two zero bytes, the element
//! type, the number of dimensions), each dimension as a big-endian `u32`, then the elements
//! in row-major order. Files may be gzip-compressed; [`read`] recognises that by the gzip
//! magic bytes (1f 8b), not by the name. Only unsigned bytes (type 0x08, what MNIST uses)
//! are supported.

use super::{DataError, Dataset, Targets};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The element type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (MNIST images: [count, rows, cols]).
    pub dims: Vec<usize>,
    /// The `product(dims)` elements, row-major.
    pub data: Vec<u8>,
}

/// The name of an IDX element type code, for messages.
fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// Reads up to `buf.len()` bytes, stopping early only at the end of the stream; returns
/// how many were read. Stream errors (including a corrupt or cut gzip stream) become
/// [`DataError::Format`] when `gz`, else [`DataError::Io`].
fn read_full(r: &mut impl Read, buf: &mut [u8], path: &Path, gz: bool) -> Result<usize, DataError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if gz => {
                return Err(DataError::format(path, format!("bad gzip stream: {e}")));
            }
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    Ok(n)
}

/// Reads an IDX file (gzip-compressed transparently, detected by its first two bytes
/// 1f 8b). Errors name the file: missing or unreadable ([`DataError::Io`]); a wrong magic,
/// an element type other than 0x08, zero dimensions, fewer data bytes than the dimensions
/// promise, or bytes after them ([`DataError::Format`]).
pub fn read(path: &Path) -> Result<IdxArray, DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = [0u8; 2];
    let n = read_full(&mut file, &mut head, path, false)?;
    let gz = n == 2 && head == [0x1f, 0x8b];
    // Start again from the beginning through the right reader.
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let what = if gz { "decompressed " } else { "" };

    let mut magic = [0u8; 4];
    let n = read_full(&mut reader, &mut magic, path, gz)?;
    if n < 4 {
        return Err(DataError::format(
            path,
            format!("truncated: {n} {what}bytes, expected at least a 4-byte IDX magic"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::format(
            path,
            format!(
                "not an IDX file: it starts with {:02x} {:02x} {:02x} {:02x}, expected 00 00 \
                 <type> <rank> (MNIST images: 00 00 08 03, labels: 00 00 08 01)",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != TYPE_U8 {
        return Err(DataError::format(
            path,
            format!(
                "IDX element type 0x{:02x} ({}) is not supported: only 0x08 (unsigned byte)",
                magic[2],
                type_name(magic[2])
            ),
        ));
    }
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(DataError::format(
            path,
            "IDX header declares 0 dimensions: expected at least 1",
        ));
    }
    let mut dim_bytes = vec![0u8; 4 * rank];
    let n = read_full(&mut reader, &mut dim_bytes, path, gz)?;
    if n < dim_bytes.len() {
        return Err(DataError::format(
            path,
            format!(
                "truncated header: {} {what}bytes, expected {} for {rank} dimensions",
                4 + n,
                4 + 4 * rank
            ),
        ));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("dimensions {dims:?} overflow")))?;
    let header = 4 + 4 * rank;
    let mut data = Vec::new();
    // Read at most one byte more than declared: enough to tell trailing data, never more
    // than the header allows (so a bad header or a gzip bomb cannot make us read forever).
    let got = reader
        .by_ref()
        .take(len as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| {
            if gz {
                DataError::format(path, format!("bad gzip stream: {e}"))
            } else {
                DataError::io(path, e)
            }
        })?;
    if got < len {
        return Err(DataError::format(
            path,
            format!(
                "truncated: dimensions {dims:?} need {len} data bytes after the {header}-byte \
                 header, found {got} ({what}file length {})",
                header + got
            ),
        ));
    }
    if got > len {
        return Err(DataError::format(
            path,
            format!(
                "unexpected bytes after the {len} data bytes that dimensions {dims:?} declare \
                 ({what}file longer than {})",
                header + len
            ),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Writes an unsigned-byte IDX file (gzip-compressed when `gzip`). `data.len()` must equal
/// the product of `dims`, with 1 to 255 dimensions each below 2³²; otherwise nothing is
/// written and a [`DataError::Format`] names the path.
pub fn write(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<(), DataError> {
    if dims.is_empty() || dims.len() > 255 {
        return Err(DataError::format(
            path,
            format!(
                "cannot write {} dimensions: IDX allows 1 to 255",
                dims.len()
            ),
        ));
    }
    if let Some(d) = dims.iter().find(|&&d| u32::try_from(d).is_err()) {
        return Err(DataError::format(
            path,
            format!("dimension {d} does not fit IDX's u32"),
        ));
    }
    let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if len != Some(data.len()) {
        return Err(DataError::format(
            path,
            format!(
                "cannot write {} bytes with dimensions {dims:?}: their product differs",
                data.len()
            ),
        ));
    }
    let mut header = vec![0, 0, TYPE_U8, dims.len() as u8];
    for &d in dims {
        header.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let io = |e| DataError::io(path, e);
    if gzip {
        let mut w = GzEncoder::new(BufWriter::new(file), Compression::default());
        w.write_all(&header).map_err(io)?;
        w.write_all(data).map_err(io)?;
        w.finish().map_err(io)?.flush().map_err(io)?;
    } else {
        let mut w = BufWriter::new(file);
        w.write_all(&header).map_err(io)?;
        w.write_all(data).map_err(io)?;
        w.flush().map_err(io)?;
    }
    Ok(())
}

/// Which half of MNIST to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    /// The 60,000 training examples (`train-…` files).
    Train,
    /// The 10,000 test examples (`t10k-…` files).
    Test,
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists, else an error naming both.
fn find_plain_or_gz(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::io(
        &plain,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "neither this file nor `{name}.gz` exists (fetch MNIST with `bash \
                 models/data/fetch.sh mnist`)"
            ),
        ),
    ))
}

/// Loads MNIST from `dir`: `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]`
/// (or `t10k-…` for [`MnistSplit::Test`]). Pixels become `byte / 255` in [0, 1] (the
/// bundled mnist-cnn function's `image` input domain); example shape [1, rows, cols]; class
/// names "0" to "9". Errors name the file: images not 3-dimensional, labels not
/// 1-dimensional, counts that differ, a label above 9; and whatever [`read`] rejects.
pub fn load_mnist(dir: &Path, split: MnistSplit) -> Result<Dataset, DataError> {
    let prefix = match split {
        MnistSplit::Train => "train",
        MnistSplit::Test => "t10k",
    };
    let images_path = find_plain_or_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_plain_or_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read(&images_path)?;
    let labels = read(&labels_path)?;
    let &[count, rows, cols] = images.dims.as_slice() else {
        return Err(DataError::format(
            &images_path,
            format!(
                "images have dimensions {:?}: expected 3 (count, rows, cols)",
                images.dims
            ),
        ));
    };
    let &[label_count] = labels.dims.as_slice() else {
        return Err(DataError::format(
            &labels_path,
            format!(
                "labels have dimensions {:?}: expected 1 (count)",
                labels.dims
            ),
        ));
    };
    if label_count != count {
        return Err(DataError::format(
            &labels_path,
            format!(
                "{label_count} labels, but {} holds {count} images: expected one label per image",
                images_path.display()
            ),
        ));
    }
    if let Some((i, l)) = labels.data.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DataError::format(
            &labels_path,
            format!("label {i} is {l}: expected a digit 0 to 9"),
        ));
    }
    let features = images.data.iter().map(|&p| f32::from(p) / 255.0).collect();
    Dataset::new(
        features,
        vec![1, rows, cols],
        Targets::Classes {
            labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
            names: (0..10).map(|d| d.to_string()).collect(),
        },
        None,
        images_path.display().to_string(),
    )
}
