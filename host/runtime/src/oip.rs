//! The Open Inference Protocol (KServe v2) JSON wire format.
//!
//! A request is `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}]}`; a response
//! is `{"model_name", "id"?, "outputs": [...]}`; a failure is `{"error": "..."}`. The CLI
//! and the server speak the same JSON, so what works on one works on the other.
//!
//! Datatypes: `FP32` (and `FP64`/`FP16`, narrowed or widened to f32) become f32 tensors;
//! `UINT8` becomes a byte tensor; `BYTES` with one base64 string element becomes a byte
//! tensor of the decoded bytes (raw files such as PNG images). `data` may be flat or
//! nested row-major arrays.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

/// One input of a request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestInput {
    /// The input's name, as in the function's metadata.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `FP32`, `FP64`, `FP16`, `UINT8` or `BYTES`.
    pub datatype: String,
    /// Row-major elements, flat or nested.
    pub data: Value,
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
    /// Row-major elements, flat.
    pub data: Value,
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
            }],
        }
    }

    /// Converts the inputs into named host tensors, validating datatype, shape and data.
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
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
                let t = input
                    .to_tensor()
                    .map_err(|e| e.context(format!("input `{}`", input.name)))?;
                Ok((input.name.clone(), t))
            })
            .collect()
    }
}

impl RequestInput {
    fn to_tensor(&self) -> Result<Tensor> {
        let count = element_count(&self.shape)?;
        let mut flat = Vec::new();
        flatten(&self.data, &mut flat)?;
        match self.datatype.as_str() {
            "FP32" | "FP64" | "FP16" => {
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
                let bytes = base64_decode(s)?;
                Tensor::from_u8(vec![bytes.len()], bytes)
            }
            other => Err(Error::unsupported(format!(
                "datatype `{other}` is not supported; use FP32 for numbers, or UINT8/BYTES for raw bytes"
            ))),
        }
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

/// Decodes standard base64 (with or without padding).
fn base64_decode(s: &str) -> Result<Vec<u8>> {
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
                    "BYTES data is not base64: byte {c:#04x} at offset {i}"
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
    /// A response from named output tensors.
    pub fn from_tensors(
        model_name: &str,
        id: Option<String>,
        outputs: &[(String, Tensor)],
    ) -> Self {
        InferenceResponse {
            model_name: model_name.to_string(),
            model_version: None,
            id,
            outputs: outputs
                .iter()
                .map(|(name, t)| {
                    let (datatype, data) = match t.data() {
                        TensorData::F32(d) => (
                            "FP32",
                            Value::Array(d.iter().map(|&x| f32_json(x)).collect()),
                        ),
                        TensorData::U8(d) => ("UINT8", Value::from(d.to_vec())),
                    };
                    ResponseOutput {
                        name: name.clone(),
                        shape: t.shape().to_vec(),
                        datatype: datatype.into(),
                        data,
                    }
                })
                .collect(),
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
        let int = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1]}]}"#;
        let e = InferenceRequest::from_json(int)
            .unwrap()
            .to_tensors()
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(InferenceRequest::from_json("{").is_err());
    }
}
