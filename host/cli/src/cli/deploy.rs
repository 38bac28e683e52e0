//! `tensorlet deploy`: uploads a packed model version to a running `tensorlet serve`
//! through the repository `load` request (Triton's `config` and `file:<version>/<file>`
//! parameters), over HTTP/1.1, plain or TLS (rustls).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};
use tensorlet_host::oip::base64_encode;
use tensorlet_host::repository::{CONFIG_FILE, FUNCTION_FILE, WEIGHTS_FILE};
use tensorlet_host::{Error, ErrorKind, Result, validate_name};

/// Upload a model version folder (from `tensorlet pack`) to a server, which checks it,
/// writes it into its repository and serves it.
///
/// Sends DIR/NAME/VERSION's function.wasm and weights.safetensors, and DIR/NAME/config.json
/// if there is one, gzip-compressed. The server refuses a version that exists, a
/// component or weights that do not load, and precompiled code; what served before keeps
/// serving then. Prints the server's answer (the versions now served).
#[derive(Args, Debug)]
pub struct DeployCommand {
    /// The server: `http://HOST[:PORT]` (port 80 if not given) or `https://HOST[:PORT]`
    /// (port 443; the token then travels encrypted).
    #[arg(long, value_name = "URL")]
    server: String,
    /// For https: trust the certificates in this PEM file (a private CA, or the server's
    /// self-signed certificate) instead of the public web roots.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// A file holding the server's admin token (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The model's name on the server.
    name: String,
    /// The version folder to upload: DIR/NAME/VERSION.
    folder: PathBuf,
}

/// How long the server may take to check and load the model.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl DeployCommand {
    /// Reads the folder, uploads it, and prints the server's answer.
    pub fn execute(self) -> Result<()> {
        validate_name("model name", &self.name)?;
        let version = self
            .folder
            .file_name()
            .and_then(|v| v.to_str())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "`{}` is not a version folder; expected DIR/NAME/VERSION with a positive \
                     integer VERSION (as `tensorlet pack` writes)",
                    self.folder.display()
                ))
            })?;
        let read = |path: &Path| std::fs::read(path).map_err(|e| Error::io(path, e));
        let mut parameters = Map::new();
        for file in [FUNCTION_FILE, WEIGHTS_FILE] {
            let bytes = read(&self.folder.join(file))?;
            parameters.insert(
                format!("file:{version}/{file}"),
                json!(base64_encode(&bytes)),
            );
        }
        if let Some(config) = self.folder.parent().map(|d| d.join(CONFIG_FILE))
            && config.is_file()
        {
            let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
            parameters.insert("config".into(), json!(text));
        }
        let body = json!({ "parameters": parameters }).to_string();
        let token = self
            .token_file
            .as_deref()
            .map(tensorlet_server::read_token_file)
            .transpose()?;
        let mut server = Server::parse(&self.server)?;
        if let Some(ca) = &self.ca_cert {
            if !server.tls {
                return Err(Error::invalid_input(format!(
                    "--ca-cert is for https:// servers; `{}` is plain HTTP",
                    self.server
                )));
            }
            server.roots = Some(tensorlet_server::read_certificates(ca)?);
        }
        let path = format!("{}/v2/repository/models/{}/load", server.prefix, self.name);
        let (status, answer) = server.post(&path, &gzip(body.as_bytes())?, token.as_deref())?;
        let text = String::from_utf8_lossy(&answer);
        if status == 200 {
            println!("{}", text.trim());
            return Ok(());
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        let kind = match status {
            404 => ErrorKind::NotFound,
            400..=499 => ErrorKind::InvalidInput,
            503 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Err(Error::new(
            kind,
            format!(
                "the server refused `{}` version {version} (HTTP {status}): {message}",
                self.name
            ),
        ))
    }
}

/// `bytes` gzip-compressed.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes)
        .and_then(|()| e.finish())
        .map_err(|e| Error::internal(format!("compressing the upload failed: {e}")))
}

/// Where a server listens: `host:port` and a path prefix.
#[derive(Debug, PartialEq, Eq)]
struct Server {
    authority: String,
    prefix: String,
    /// Whether it speaks TLS (`https://`).
    tls: bool,
    /// The certificates to trust for TLS instead of the public web roots.
    roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl Server {
    /// Parses `http://HOST[:PORT][/PREFIX]` (or the same without `http://`), or
    /// `https://HOST[:PORT][/PREFIX]`.
    fn parse(url: &str) -> Result<Server> {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://").unwrap_or(url)),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::invalid_input(format!(
                "`{url}` is not a server URL; expected http[s]://HOST[:PORT]"
            )));
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && !authority.ends_with(']');
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Server {
            authority,
            prefix: prefix.to_string(),
            tls,
            roots: None,
        })
    }

    /// The host part of the authority (what the certificate must name).
    fn host(&self) -> &str {
        let host = match self.authority.rsplit_once(':') {
            Some((h, _)) => h,
            None => &self.authority,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// A TLS client session for this server.
    fn tls_session(&self) -> Result<rustls::ClientConnection> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.roots {
            Some(certs) => {
                for c in certs {
                    roots.add(c.clone()).map_err(|e| {
                        Error::invalid_input(format!("a --ca-cert certificate is unusable: {e}"))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(self.host().to_string()).map_err(|e| {
                Error::invalid_input(format!("`{}` is not a TLS server name: {e}", self.host()))
            })?;
        rustls::ClientConnection::new(std::sync::Arc::new(config), name)
            .map_err(|e| Error::internal(format!("starting TLS with {}: {e}", self.authority)))
    }

    /// POSTs the gzip-compressed `body` to `path`: the status and the response body.
    fn post(&self, path: &str, body: &[u8], token: Option<&str>) -> Result<(u16, Vec<u8>)> {
        let failed = |what: &str, e: std::io::Error| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{what} the server at {}: {e}", self.authority),
            )
        };
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .map_err(|e| failed("resolving", e))?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| failed("connecting to", last))?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| failed("talking to", e))?;
        let mut stream: Box<dyn ReadWrite> = if self.tls {
            Box::new(rustls::StreamOwned::new(self.tls_session()?, stream))
        } else {
            Box::new(stream)
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.authority,
            body.len()
        );
        if let Some(t) = token {
            head += &format!("Authorization: Bearer {t}\r\n");
        }
        head += "\r\n";
        let mut response = Vec::new();
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.read_to_end(&mut response))
            .map_err(|e| failed("talking to", e))?;
        parse_response(&response).ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the server at {} did not answer in HTTP/1.1 ({} bytes: {:?})",
                    self.authority,
                    response.len(),
                    String::from_utf8_lossy(&response[..response.len().min(80)])
                ),
            )
        })
    }
}

/// A connection, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The status and body of a whole HTTP/1.1 response (`Content-Length`, chunked, or up to
/// the end of the connection).
fn parse_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let rest = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse::<u16>()
        .ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) => rest.get(..n)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some((status, body))
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse() {
        let s = |a: &str, p: &str| Server {
            authority: a.into(),
            prefix: p.into(),
            tls: false,
            roots: None,
        };
        assert_eq!(Server::parse("http://h:8000").unwrap(), s("h:8000", ""));
        assert_eq!(Server::parse("h:8000/").unwrap(), s("h:8000", ""));
        assert_eq!(Server::parse("http://h").unwrap(), s("h:80", ""));
        assert_eq!(
            Server::parse("http://10.0.0.2:81/tl/").unwrap(),
            s("10.0.0.2:81", "/tl")
        );
        assert_eq!(Server::parse("http://[::1]:9").unwrap(), s("[::1]:9", ""));
        assert_eq!(Server::parse("http://[::1]").unwrap(), s("[::1]:80", ""));
        let https = Server::parse("https://h/tl").unwrap();
        assert_eq!((https.authority.as_str(), https.tls), ("h:443", true));
        assert_eq!(Server::parse("https://[::1]:8443").unwrap().host(), "::1");
        assert!(Server::parse("http://").is_err());
        assert!(Server::parse("http://u@h").is_err());
    }

    #[test]
    fn responses_parse_by_length_chunks_or_end() {
        let r = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nhello+extra";
        assert_eq!(parse_response(r), Some((400, b"hello".to_vec())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((200, b"abcde".to_vec())));
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nall of it";
        assert_eq!(parse_response(r), Some((200, b"all of it".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"),
            None
        );
        assert_eq!(parse_response(b"SMTP 220\r\n\r\n"), None);
    }
}
