//! Raw e-mail (RFC 5322 / MIME, as a mail server stores it) to the text a language model
//! should read: the subject and the readable body, without headers, transfer encodings or
//! markup. [`readable_text`] never fails and never panics: any bytes give some text.
//!
//! What it does, in order:
//!
//! 1. **Decode bytes.** Valid UTF-8 is kept; every byte that is not part of a valid UTF-8
//!    sequence is read as Latin-1 (mail of the era of the SpamAssassin corpus is mostly
//!    Latin-1 or Windows-1252). Line endings become `\n`.
//! 2. **Headers.** If the text starts like a message (a `From ` mbox line or a
//!    `Name: value` header line), everything up to the first empty line is the header
//!    block (continuation lines unfolded). Only `Subject`, `Content-Type` and
//!    `Content-Transfer-Encoding` are used; anything else that does not look like a
//!    message is all body.
//! 3. **Body.** `quoted-printable` and `base64` transfer encodings are decoded. A
//!    `multipart/*` body is split at its boundary and each part handled the same way,
//!    recursively (up to [`MAX_DEPTH`] levels): `text/*` parts (and parts without a
//!    content type) contribute their text, others (images, attachments) nothing.
//! 4. **Markup.** `text/html` (or a body that starts with an HTML tag) loses its tags and
//!    the content of `<script>` and `<style>`; the common entities are decoded.
//! 5. **Result.** `Subject` and body joined by a newline, runs of whitespace collapsed to
//!    one space, cut to at most [`MAX_CHARS`] characters (far more than a 256-word-piece
//!    encoder reads).

/// Characters of text returned at most.
pub const MAX_CHARS: usize = 8192;

/// Nesting levels of `multipart` bodies followed.
pub const MAX_DEPTH: usize = 8;

/// The subject and readable body of the raw message `raw` (see the module docs).
pub fn readable_text(raw: &[u8]) -> String {
    let text = decode_bytes(raw).replace("\r\n", "\n");
    let (headers, body) = split_message(&text);
    let subject = header(&headers, "subject").unwrap_or_default();
    let mut out = String::new();
    out.push_str(&subject);
    out.push('\n');
    part_text(&headers, body, 0, &mut out);
    collapse(&out, MAX_CHARS)
}

/// `raw` as text: UTF-8 where valid, Latin-1 for every other byte.
fn decode_bytes(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        s.push_str(chunk.valid());
        s.extend(chunk.invalid().iter().map(|&b| char::from(b)));
    }
    s
}

/// Whether `line` is a header line (`Name: value`, the name printable ASCII without
/// spaces or colons) or an mbox `From ` line.
fn is_header_line(line: &str) -> bool {
    if line.starts_with("From ") {
        return true;
    }
    match line.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        }
        None => false,
    }
}

/// Splits a message (or a MIME part) into its unfolded header lines and its body. Text
/// that does not start with a header line is all body.
fn split_message(text: &str) -> (Vec<(String, String)>, &str) {
    let first = text.lines().next().unwrap_or("");
    if !is_header_line(first) {
        return (Vec::new(), text);
    }
    let (block, body) = match text.find("\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

/// The value of header `name` (lowercase), the first if repeated.
fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// The value of parameter `name` in a header value such as `multipart/mixed;
/// boundary="abc"`.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Appends the readable text of a part with `headers` and `body` to `out`.
fn part_text(headers: &[(String, String)], body: &str, depth: usize, out: &mut String) {
    let content_type = header(headers, "content-type").unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let Some(boundary) = parameter(&content_type, "boundary").filter(|b| !b.is_empty()) else {
            out.push_str(body);
            return;
        };
        if depth >= MAX_DEPTH {
            return;
        }
        let delimiter = format!("--{boundary}");
        // The preamble before the first delimiter is not a part; the epilogue after the
        // closing `--boundary--` is cut off with it.
        for part in body.split(delimiter.as_str()).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part.strip_prefix('\n').unwrap_or(part);
            let (h, b) = split_message(part);
            part_text(&h, b, depth + 1, out);
            out.push('\n');
        }
        return;
    }
    if !(mime.is_empty() || mime.starts_with("text/") || mime.starts_with("message/")) {
        return;
    }
    let encoding = header(headers, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "quoted-printable" => decode_bytes(&quoted_printable(body)),
        "base64" => decode_bytes(&base64(body)),
        _ => body.to_owned(),
    };
    let html = mime == "text/html" || decoded.trim_start().starts_with('<');
    if html {
        strip_html(&decoded, out);
    } else {
        out.push_str(&decoded);
    }
}

/// Decodes quoted-printable: `=XX` hex escapes and `=` soft line breaks; anything
/// malformed is kept as it is.
fn quoted_printable(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
            if let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Decodes base64, skipping whitespace and stopping at padding or the first character
/// outside the alphabet.
fn base64(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Appends `html` without tags, comments, scripts and styles, entities decoded, to `out`.
fn strip_html(html: &str, out: &mut String) {
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        push_entities(&rest[..open], out);
        out.push(' ');
        let tag = &rest[open..];
        let end = if tag.starts_with("<!--") {
            tag.find("-->").map(|e| e + 3)
        } else {
            let lower: String = tag.chars().take(8).collect::<String>().to_ascii_lowercase();
            let closing = if lower.starts_with("<script") {
                Some("</script")
            } else if lower.starts_with("<style") {
                Some("</style")
            } else {
                None
            };
            match closing {
                Some(close) => find_ascii_case_insensitive(tag, close)
                    .and_then(|at| tag[at..].find('>').map(|e| at + e + 1)),
                None => tag.find('>').map(|e| e + 1),
            }
        };
        match end {
            Some(end) => rest = &tag[end..],
            None => return,
        }
    }
    push_entities(rest, out);
}

/// The byte offset of the first ASCII-case-insensitive match of `needle` in `hay`.
fn find_ascii_case_insensitive(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..h.len().saturating_sub(n.len()) + 1)
        .find(|&i| h.len() >= i + n.len() && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Appends `text` to `out` with `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and
/// numeric entities decoded; others are kept as written.
fn push_entities(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let decoded = tail.find(';').filter(|&e| e <= 10).and_then(|end| {
            let name = &tail[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let code =
                        if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                            u32::from_str_radix(hex, 16).ok()
                        } else {
                            name.strip_prefix('#').and_then(|d| d.parse().ok())
                        };
                    code.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
}

/// `text` with every run of whitespace as one space, trimmed, cut to `max` characters.
fn collapse(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() >= max * 4 {
            break;
        }
    }
    match out.char_indices().nth(max) {
        Some((at, _)) => out[..at].to_owned(),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_subject_and_body_and_drops_other_headers() {
        let raw = b"From a@b.c  Thu Aug 22 13:17:22 2002\r\nReceived: from x\r\n\tby y\r\n\
                    Subject: Life Insurance -\r\n  Why Pay More?\r\nTo: d@e.f\r\n\r\n\
                    Hello   there,\r\n\r\nbye\r\n";
        assert_eq!(
            readable_text(raw),
            "Life Insurance - Why Pay More? Hello there, bye"
        );
    }

    #[test]
    fn text_that_is_not_a_message_is_all_body() {
        assert_eq!(
            readable_text(b"just a note\n\nsecond"),
            "just a note second"
        );
        assert_eq!(readable_text(b""), "");
    }

    #[test]
    fn decodes_quoted_printable_and_latin1() {
        let raw = b"Subject: caf\xe9\nContent-Transfer-Encoding: quoted-printable\n\n\
                    na=EFve =3D soft=\nbreak";
        assert_eq!(readable_text(raw), "caf\u{e9} na\u{ef}ve = softbreak");
    }

    #[test]
    fn decodes_base64_and_strips_html() {
        // "<html><style>p{}</style><b>Buy&nbsp;now</b> &amp; save&#33;</html>"
        let html = "<html><style>p{}</style><b>Buy&nbsp;now</b> &amp; save&#33;</html>";
        let b64 = encode_base64(html.as_bytes());
        let raw = format!(
            "Subject: Offer\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n{b64}\n"
        );
        assert_eq!(readable_text(raw.as_bytes()), "Offer Buy now & save!");
    }

    #[test]
    fn multipart_takes_text_parts_and_skips_attachments() {
        let raw = "Subject: s\nContent-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n\
                   --XX\nContent-Type: text/plain\n\nplain part\n\
                   --XX\nContent-Type: image/gif\nContent-Transfer-Encoding: base64\n\nR0lGODlh\n\
                   --XX\nContent-Type: text/html\n\n<p>html <!-- c --> part</p>\n\
                   --XX--\nepilogue\n";
        assert_eq!(readable_text(raw.as_bytes()), "s plain part html part");
    }

    #[test]
    fn output_is_bounded_and_never_panics() {
        let long = "word ".repeat(10_000);
        assert_eq!(readable_text(long.as_bytes()).chars().count(), MAX_CHARS);
        for raw in [
            &b"Subject: x\nContent-Type: multipart/mixed; boundary=\n\n--\n"[..],
            b"<script",
            b"&#xFFFFFFFF; &#55296; &",
            b"a: b\n\n=",
            b"Content-Transfer-Encoding: base64\n\n====",
        ] {
            let _ = readable_text(raw);
        }
    }

    /// Standard base64 with padding, for building test messages.
    fn encode_base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                if k <= c.len() {
                    s.push(char::from(A[(n >> (18 - 6 * k)) as usize & 63]));
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
