//! The Open Inference Protocol (KServe v2) JSON wire format.
//!
//! A request is `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}]}`; a response
//! is `{"model_name", "id"?, "outputs": [...]}`; a failure is `{"error": "..."}`. The CLI
//! and the server speak the same JSON, so what works on one works on the other.
//!
//! Datatypes: `FP32` (and `FP64`/`FP16`, narrowed or widened to f32) become f32 tensors;
//! `UINT8` becomes a byte tensor; `BYTES` with one base64 string element becomes a byte
//! tensor of the decoded bytes (raw files such as PNG images), except for an input the
//! function declares as `bytes` (text): there `BYTES` elements are byte strings, each JSON
//! string taken verbatim (its UTF-8 bytes) and binary data as Triton sends it, each element
//! a 4-byte little-endian length and that many bytes. `data` may be flat or nested
//! row-major arrays.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData, element_count};

/// An inference request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InferenceRequest {
    /// Caller's request id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The named inputs.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted (all when empty), each optionally as binary data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<RequestedOutput>,
    /// Request parameters; `binary_data_output: true` asks for every output as binary.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

/// An output a request asks for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestedOutput {
    /// The output's name.
    pub name: String,
    /// Output parameters; `binary_data: true` asks for it as binary data.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

/// One input of a request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestInput {
    /// The input's name, as in the function's metadata.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `FP32`, `FP64`, `FP16`, `BF16`, `INT32`, `INT64`, `UINT8` or `BYTES`.
    pub datatype: String,
    /// Row-major elements, flat or nested (absent when sent as binary data).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Input parameters; `binary_data_size` says the data follows the JSON as binary.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// The input's binary data (the binary tensor data extension), cut from the body.
    #[serde(skip)]
    pub binary: Option<Vec<u8>>,
}

/// An inference response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InferenceResponse {
    /// The function that produced it.
    pub model_name: String,
    /// The model version that answered (set by a server; absent on the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The named outputs.
    pub outputs: Vec<ResponseOutput>,
}

/// One output of a response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResponseOutput {
    /// The output's name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `FP32` or `UINT8`.
    pub datatype: String,
    /// Row-major elements, flat (absent when sent as binary data).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Output parameters: `binary_data_size` when the data follows the JSON as binary.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

impl InferenceRequest {
    /// Parses a request from JSON text, with an error that says where it went wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::invalid_input(format!(
                "not an Open Inference Protocol request ({e}); expected \
                 {{\"inputs\":[{{\"name\":..,\"shape\":[..],\"datatype\":\"FP32\",\"data\":[..]}}]}}"
            ))
        })
    }

    /// A request with one `UINT8` input `name` holding `bytes` (e.g. a PNG file).
    pub fn from_bytes_input(name: &str, bytes: &[u8]) -> Self {
        InferenceRequest {
            id: None,
            inputs: vec![RequestInput {
                name: name.to_string(),
                shape: vec![bytes.len()],
                datatype: "UINT8".into(),
                data: Value::from(bytes.to_vec()),
                parameters: Map::new(),
                binary: None,
            }],
            outputs: Vec::new(),
            parameters: Map::new(),
        }
    }

    /// Parses a request body of the binary tensor data extension: the first
    /// `header_length` bytes (the `Inference-Header-Content-Length` header) are the JSON
    /// request, and the binary data of every input whose `parameters.binary_data_size` is
    /// set follows, in input order. Without `header_length` the whole body is JSON.
    pub fn from_body(body: &[u8], header_length: Option<usize>) -> Result<Self> {
        let json_len = header_length.unwrap_or(body.len());
        let Some(json) = body.get(..json_len) else {
            return Err(Error::invalid_input(format!(
                "Inference-Header-Content-Length is {json_len}, but the body has only {} bytes",
                body.len()
            )));
        };
        let text = std::str::from_utf8(json).map_err(|e| {
            Error::invalid_input(format!("the request's JSON header is not UTF-8 ({e})"))
        })?;
        let mut request = Self::from_json(text)?;
        let mut rest = &body[json_len..];
        for input in &mut request.inputs {
            let Some(size) = input.parameters.get("binary_data_size") else {
                continue;
            };
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "input `{}`: binary_data_size {size} is not a byte count",
                        input.name
                    ))
                })?;
            if size > rest.len() {
                return Err(Error::invalid_input(format!(
                    "input `{}`: binary_data_size is {size} bytes, but only {} bytes of binary \
                     data are left in the body",
                    input.name,
                    rest.len()
                )));
            }
            let (data, tail) = rest.split_at(size);
            input.binary = Some(data.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(Error::invalid_input(format!(
                "the body has {} bytes of binary data that no input's binary_data_size claims",
                rest.len()
            )));
        }
        Ok(request)
    }

    /// Whether output `name` is to be sent as binary data.
    pub fn wants_binary(&self, name: &str) -> bool {
        let flag = |p: &Map<String, Value>, key: &str| p.get(key).and_then(Value::as_bool);
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| flag(&o.parameters, "binary_data"))
            .or_else(|| flag(&self.parameters, "binary_data_output"))
            .unwrap_or(false)
    }

    /// Converts the inputs into named host tensors, validating datatype, shape and data.
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.to_tensors_as(|_| false)
    }

    /// [`InferenceRequest::to_tensors`], taking the inputs for which `strings` says so as
    /// byte-string tensors (`BYTES` elements kept as strings, not one base64 file).
    pub fn to_tensors_as(&self, strings: impl Fn(&str) -> bool) -> Result<Vec<(String, Tensor)>> {
        let mut seen = std::collections::HashSet::new();
        self.inputs
            .iter()
            .map(|input| {
                if !seen.insert(input.name.as_str()) {
                    return Err(Error::invalid_input(format!(
                        "input `{}` appears twice",
                        input.name
                    )));
                }
                let t = if strings(&input.name) {
                    input.to_string_tensor()
                } else {
                    input.to_tensor()
                };
                let t = t.map_err(|e| e.context(format!("input `{}`", input.name)))?;
                Ok((input.name.clone(), t))
            })
            .collect()
    }
}

impl RequestInput {
    /// The input as a tensor of byte strings: `BYTES` only; JSON strings taken verbatim,
    /// binary data as length-prefixed elements.
    fn to_string_tensor(&self) -> Result<Tensor> {
        if self.datatype != "BYTES" {
            return Err(Error::invalid_input(format!(
                "datatype `{}` given where the function takes text: use BYTES",
                self.datatype
            )));
        }
        let count = element_count(&self.shape)?;
        let strings = match &self.binary {
            Some(bytes) => {
                let mut rest = bytes.as_slice();
                let mut strings = Vec::new();
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_le_bytes(*len) as usize;
                    let Some((s, tail)) = tail.split_at_checked(len) else {
                        return Err(Error::invalid_input(format!(
                            "BYTES binary data: element {} says it has {len} bytes, only {} follow",
                            strings.len(),
                            tail.len()
                        )));
                    };
                    strings.push(s.to_vec());
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(Error::invalid_input(format!(
                        "BYTES binary data ends with {} bytes that are not a 4-byte length and \
                         its element",
                        rest.len()
                    )));
                }
                strings
            }
            None => {
                check_nesting(&self.data, &self.shape)?;
                let mut flat = Vec::new();
                flatten(&self.data, &mut flat)?;
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.as_bytes().to_vec()),
                        other => Err(Error::invalid_input(format!(
                            "BYTES element {i} is {other}, expected a string"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        check_count(&self.shape, count, strings.len())?;
        Tensor::from_bytes(self.shape.clone(), strings)
    }

    fn to_tensor(&self) -> Result<Tensor> {
        if let Some(bytes) = &self.binary {
            return self.binary_tensor(bytes);
        }
        let count = element_count(&self.shape)?;
        check_nesting(&self.data, &self.shape)?;
        let mut flat = Vec::new();
        flatten(&self.data, &mut flat)?;
        match self.datatype.as_str() {
            "FP32" | "FP64" | "FP16" | "BF16" | "INT32" | "INT64" => {
                let data = flat
                    .iter()
                    .map(|v| match v.as_f64() {
                        Some(x) if x.is_finite() => Ok(x as f32),
                        _ => Err(Error::invalid_input(format!(
                            "element {v} is not a finite number"
                        ))),
                    })
                    .collect::<Result<Vec<f32>>>()?;
                check_count(&self.shape, count, data.len())?;
                Tensor::from_f32(self.shape.clone(), data)
            }
            "UINT8" => {
                let data = flat
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .and_then(|x| u8::try_from(x).ok())
                            .ok_or_else(|| {
                                Error::invalid_input(format!("element {v} is not a byte (0..=255)"))
                            })
                    })
                    .collect::<Result<Vec<u8>>>()?;
                check_count(&self.shape, count, data.len())?;
                Tensor::from_u8(self.shape.clone(), data)
            }
            "BYTES" => {
                let [Value::String(s)] = flat.as_slice() else {
                    return Err(Error::invalid_input(
                        "BYTES data must be one base64 string (e.g. an encoded image)",
                    ));
                };
                let bytes = base64_decode("BYTES data", s)?;
                Tensor::from_u8(vec![bytes.len()], bytes)
            }
            other => Err(Error::unsupported(format!(
                "datatype `{other}` is not supported; use FP32 for numbers, or UINT8/BYTES for raw bytes"
            ))),
        }
    }
}

impl RequestInput {
    /// The tensor of binary `bytes` (little-endian elements; BYTES: one element with a
    /// 4-byte length prefix).
    fn binary_tensor(&self, bytes: &[u8]) -> Result<Tensor> {
        let count = element_count(&self.shape)?;
        let size = match self.datatype.as_str() {
            "FP64" | "INT64" => 8,
            "FP32" | "INT32" => 4,
            "FP16" | "BF16" => 2,
            "UINT8" => 1,
            "BYTES" => {
                let Some((len, data)) = bytes.split_first_chunk::<4>() else {
                    return Err(Error::invalid_input(
                        "BYTES binary data must start with a 4-byte length",
                    ));
                };
                let len = u32::from_le_bytes(*len) as usize;
                if count != 1 || len != data.len() {
                    return Err(Error::invalid_input(format!(
                        "BYTES binary data must hold one element (shape [1]) whose 4-byte \
                         length ({len}) equals the bytes that follow ({})",
                        data.len()
                    )));
                }
                return Tensor::from_u8(vec![data.len()], data.to_vec());
            }
            other => {
                return Err(Error::unsupported(format!(
                    "datatype `{other}` is not supported; use FP32 for numbers, or UINT8/BYTES \
                     for raw bytes"
                )));
            }
        };
        let expected = count.checked_mul(size).ok_or_else(|| {
            Error::limit_exceeded(format!("shape {:?} has too many elements", self.shape))
        })?;
        if bytes.len() != expected {
            return Err(Error::shape_mismatch(format!(
                "shape {:?} of {} needs {expected} bytes of binary data, got {}",
                self.shape,
                self.datatype,
                bytes.len()
            )));
        }
        if self.datatype == "UINT8" {
            return Tensor::from_u8(self.shape.clone(), bytes.to_vec());
        }
        let data: Vec<f32> = bytes
            .chunks_exact(size)
            .map(|c| match self.datatype.as_str() {
                "FP64" => f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
                "INT64" => i64::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
                "FP32" => f32::from_le_bytes(c.try_into().unwrap_or_default()),
                "INT32" => i32::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
                "FP16" => half::f16::from_le_bytes(c.try_into().unwrap_or_default()).to_f32(),
                _ => half::bf16::from_le_bytes(c.try_into().unwrap_or_default()).to_f32(),
            })
            .collect();
        if let Some(bad) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid_input(format!(
                "element {bad} is not a finite number"
            )));
        }
        Tensor::from_f32(self.shape.clone(), data)
    }
}

fn check_count(shape: &[usize], expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::shape_mismatch(format!(
            "shape {shape:?} needs {expected} elements, data has {got}"
        )));
    }
    Ok(())
}

/// Checks that nested `data` (an array whose elements are arrays) has exactly the nesting of
/// `shape`: one level per dimension, each as long as its dimension. Flat data (an array of
/// scalars, or one scalar) is left to the element count check.
fn check_nesting(data: &Value, shape: &[usize]) -> Result<()> {
    fn walk(v: &Value, shape: &[usize], path: &mut Vec<usize>) -> Result<()> {
        let at = |path: &[usize]| path.iter().map(|i| format!("[{i}]")).collect::<String>();
        match (v, shape.split_first()) {
            (Value::Array(items), Some((&d, rest))) => {
                if items.len() != d {
                    return Err(Error::shape_mismatch(format!(
                        "data{} has {} elements where the shape says {d} (nested data must \
                         follow the shape row by row; ragged rows are refused)",
                        at(path),
                        items.len()
                    )));
                }
                for (i, item) in items.iter().enumerate() {
                    path.push(i);
                    walk(item, rest, path)?;
                    path.pop();
                }
                Ok(())
            }
            (Value::Array(_), None) => Err(Error::shape_mismatch(format!(
                "data{} nests deeper than the shape's {} dimensions",
                at(path),
                path.len()
            ))),
            (_, Some(_)) => Err(Error::shape_mismatch(format!(
                "data{} is a scalar where the shape says another dimension (nested data must \
                 follow the shape row by row)",
                at(path)
            ))),
            (_, None) => Ok(()),
        }
    }
    let nested = matches!(data, Value::Array(items) if items.first().is_some_and(Value::is_array));
    if nested {
        walk(data, shape, &mut Vec::new())
    } else {
        Ok(())
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) -> Result<()> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(_) | Value::String(_) => {
            out.push(v);
            Ok(())
        }
        other => Err(Error::invalid_input(format!(
            "data element {other} is neither a number nor an array"
        ))),
    }
}

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `bytes` as standard base64 with padding (what [`base64_decode`] reads).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (with or without padding; whitespace is skipped); `what` names
/// the text in errors.
pub fn base64_decode(what: &str, s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in s.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => {
                return Err(Error::invalid_input(format!(
                    "{what} is not base64: byte {c:#04x} at offset {i}"
                )));
            }
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

impl InferenceResponse {
    /// A response from named output tensors, the outputs for which `binary` says so as
    /// binary data: their elements (little-endian) are appended to the returned bytes in
    /// output order, and their `parameters.binary_data_size` says how many.
    pub fn from_tensors_binary(
        model_name: &str,
        id: Option<String>,
        outputs: &[(String, Tensor)],
        binary: impl Fn(&str) -> bool,
    ) -> (Self, Vec<u8>) {
        let mut tail = Vec::new();
        let outputs = outputs
            .iter()
            .map(|(name, t)| ResponseOutput::new(name, t, binary(name).then_some(&mut tail)))
            .collect();
        let response = InferenceResponse {
            model_name: model_name.to_string(),
            model_version: None,
            id,
            outputs,
        };
        (response, tail)
    }

    /// A response from named output tensors, every output as JSON.
    pub fn from_tensors(
        model_name: &str,
        id: Option<String>,
        outputs: &[(String, Tensor)],
    ) -> Self {
        Self::from_tensors_binary(model_name, id, outputs, |_| false).0
    }
}

impl ResponseOutput {
    /// Output `name` holding `t`: its elements as JSON, or, given `binary`, appended there
    /// (little-endian) with `parameters.binary_data_size` saying how many bytes.
    fn new(name: &str, t: &Tensor, binary: Option<&mut Vec<u8>>) -> Self {
        let datatype = match t.data() {
            TensorData::F32(_) => "FP32",
            TensorData::U8(_) => "UINT8",
            TensorData::Bytes(_) => "BYTES",
        };
        let mut parameters = Map::new();
        let data = match (binary, t.data()) {
            (None, TensorData::F32(d)) => Value::Array(d.iter().map(|&x| f32_json(x)).collect()),
            (None, TensorData::U8(d)) => Value::from(d.to_vec()),
            (None, TensorData::Bytes(d)) => Value::Array(
                d.iter()
                    .map(|s| Value::String(String::from_utf8_lossy(s).into_owned()))
                    .collect(),
            ),
            (Some(tail), data) => {
                let start = tail.len();
                match data {
                    TensorData::F32(d) => tail.extend(d.iter().flat_map(|x| x.to_le_bytes())),
                    TensorData::U8(d) => tail.extend_from_slice(d),
                    TensorData::Bytes(d) => {
                        for s in d.iter() {
                            tail.extend_from_slice(&(s.len() as u32).to_le_bytes());
                            tail.extend_from_slice(s);
                        }
                    }
                }
                parameters.insert("binary_data_size".into(), Value::from(tail.len() - start));
                Value::Null
            }
        };
        ResponseOutput {
            name: name.to_string(),
            shape: t.shape().to_vec(),
            datatype: datatype.into(),
            data,
            parameters,
        }
    }
}

/// `x` as a JSON number printed at f32 precision (the shortest text that reads back as
/// the same f32), or `null` if it is not finite (JSON has no NaN or infinity).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_or_misnested_data_is_refused_naming_where() {
        let request = |shape: &str, data: &str| {
            let text = format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","data":{data}}}]}}"#
            );
            InferenceRequest::from_json(&text).unwrap().to_tensors()
        };
        // Four elements in all, but rows of 3 and 1 for a [2, 2] shape.
        let e = request("[2,2]", "[[1,2,3],[4]]").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ShapeMismatch);
        assert!(e.to_string().contains("data[0] has 3 elements"), "{e}");
        let e = request("[2,2]", "[[1,2],[3,[4]]]").unwrap_err();
        assert!(e.to_string().contains("data[1][1] nests deeper"), "{e}");
        let e = request("[2,2]", "[[1,2],3]").unwrap_err();
        assert!(e.to_string().contains("data[1] is a scalar"), "{e}");
        let e = request("[4]", "[[1,2],[3,4]]").unwrap_err();
        assert!(e.to_string().contains("data has 2 elements"), "{e}");
        // Exact nesting and flat data both pass.
        assert!(request("[2,2]", "[[1,2],[3,4]]").is_ok());
        assert!(request("[2,1,2]", "[[[1,2]],[[3,4]]]").is_ok());
        assert!(request("[2,2]", "[1,2,3,4]").is_ok());
    }

    #[test]
    fn nested_and_flat_data_agree() {
        let flat = r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested =
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let a = InferenceRequest::from_json(flat)
            .unwrap()
            .to_tensors()
            .unwrap();
        let b = InferenceRequest::from_json(nested)
            .unwrap()
            .to_tensors()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].1.f32s("x").unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn base64_round_trips() {
        // RFC 4648 §10's test vectors.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode("t", encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode("t", &base64_encode(&all)).unwrap(), all);
        let e = base64_decode("the weights", "Zm9v!").unwrap_err();
        assert!(e.message().contains("the weights") && e.message().contains("offset 4"));
    }

    #[test]
    fn base64_bytes_decode() {
        let req =
            r#"{"inputs":[{"name":"png","shape":[1],"datatype":"BYTES","data":["aGVsbG8="]}]}"#;
        let t = InferenceRequest::from_json(req)
            .unwrap()
            .to_tensors()
            .unwrap();
        assert_eq!(t[0].1.u8s("png").unwrap(), b"hello");
    }

    #[test]
    fn bad_inputs_are_named() {
        let wrong_count = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#;
        let e = InferenceRequest::from_json(wrong_count)
            .unwrap()
            .to_tensors()
            .unwrap_err();
        assert!(
            e.message().contains("input `x`") && e.message().contains("needs 3"),
            "{e}"
        );
        let boolean = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[true]}]}"#;
        let e = InferenceRequest::from_json(boolean)
            .unwrap()
            .to_tensors()
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        let int = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[7]}]}"#;
        let t = InferenceRequest::from_json(int)
            .unwrap()
            .to_tensors()
            .unwrap();
        assert_eq!(t[0].1.f32s("x").unwrap(), &[7.0]);
        assert!(InferenceRequest::from_json("{").is_err());
    }

    #[test]
    fn binary_inputs_of_every_datatype_decode() {
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "FP32",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                "FP64",
                [1.5f64, -2.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                "INT32",
                [3i32, -4].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "INT64",
                [3i64, -4].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "FP16",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (
                "BF16",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        ];
        for (datatype, bytes) in cases {
            let header = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{datatype}","parameters":{{"binary_data_size":{}}}}}]}}"#,
                bytes.len()
            );
            let mut body = header.clone().into_bytes();
            body.extend_from_slice(&bytes);
            let r = InferenceRequest::from_body(&body, Some(header.len())).unwrap();
            let t = r.to_tensors().unwrap();
            let want: &[f32] = if datatype.starts_with("INT") {
                &[3.0, -4.0]
            } else {
                &[1.5, -2.0]
            };
            assert_eq!(t[0].1.f32s("x").unwrap(), want, "{datatype}");
        }
        // BYTES: one element with a length prefix.
        let header = r#"{"inputs":[{"name":"png","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":9}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(b"hello");
        let r = InferenceRequest::from_body(&body, Some(header.len())).unwrap();
        assert_eq!(r.to_tensors().unwrap()[0].1.u8s("png").unwrap(), b"hello");
        assert!(r.wants_binary("anything"));
        // A size that disagrees with the shape is named.
        let header = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        let e = InferenceRequest::from_body(&body, Some(header.len()))
            .unwrap()
            .to_tensors()
            .unwrap_err();
        assert!(e.message().contains("needs 12 bytes"), "{e}");
    }
}
