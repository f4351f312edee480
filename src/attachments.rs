//! The rules of attachments that need no storage: names, what a file is (never what the
//! client says it is), how a browser is given it, and the short-lived download links. Pure;
//! the upload and download paths are `chat::attachments`.

/// Largest chunk of an upload or a download: small enough to resend cheaply on a flaky
/// network, large enough that a 10 MiB file is 40 calls.
pub const MAX_CHUNK_BYTES: usize = 256 << 10;
/// Unfinished uploads one user may have open at once (each holds its chunks until finished or
/// expired).
pub const MAX_OPEN_UPLOADS: usize = 8;
/// Attachments one message may carry.
pub const MAX_PER_MESSAGE: usize = 10;
/// Longest file name, bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// How long a download link works.
pub const LINK_TTL_MS: i64 = 5 * 60 * 1000;
/// Bytes of a file's start read to tell what it is (a JPEG's size can sit behind a large EXIF
/// block, within the first 64 KiB in practice).
pub const SNIFF_BYTES: usize = 256 << 10;

/// A SHA-256 (or any bytes) as lowercase hex, as messages and `check` name contents.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file name: 1-255 bytes, no path separators, no control or bidi characters (a
/// name is shown to others and becomes a download's file name), not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), String> {
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
    if name.trim().is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("name is {} bytes; at most {MAX_NAME_BYTES}", name.len()));
    }
    if name.chars().any(|c| c == '/' || c == '\\' || c.is_control() || bidi(c)) {
        return Err("name contains /, \\ or control characters".into());
    }
    if name == "." || name == ".." {
        return Err("name is . or ..".into());
    }
    Ok(())
}

/// What a file is: its media type and, for an image, its size in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The media type the server decided.
    pub media_type: String,
    /// Width, 0 when not an image or unreadable.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Tells what a file is from its first bytes (`head`) and, only for kinds no browser runs,
/// its name: images and PDF by their signatures, a few plain kinds by extension, anything
/// else `application/octet-stream`. A name never makes a file an image, HTML or SVG, so what
/// a browser is shown inline is what the bytes are.
pub fn describe(head: &[u8], name: &str) -> Described {
    use imagesize::ImageType;
    let image = match imagesize::image_type(head) {
        Ok(ImageType::Png) => Some("image/png"),
        Ok(ImageType::Jpeg) => Some("image/jpeg"),
        Ok(ImageType::Gif) => Some("image/gif"),
        Ok(ImageType::Webp) => Some("image/webp"),
        Ok(ImageType::Bmp) => Some("image/bmp"),
        Ok(ImageType::Heif(_)) => Some("image/heic"),
        _ => None,
    };
    if let Some(media_type) = image {
        let (width, height) = match imagesize::blob_size(head) {
            Ok(s) => (clamp(s.width), clamp(s.height)),
            Err(_) => (0, 0),
        };
        return Described { media_type: media_type.into(), width, height };
    }
    let media_type = if head.starts_with(b"%PDF-") {
        "application/pdf"
    } else {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "txt" | "log" | "md" => "text/plain",
            "csv" => "text/csv",
            "json" => "application/json",
            "zip" => "application/zip",
            "mp3" => "audio/mpeg",
            "ogg" | "opus" => "audio/ogg",
            "m4a" => "audio/mp4",
            "mp4" => "video/mp4",
            "webm" => "video/webm",
            _ => "application/octet-stream",
        }
    };
    Described { media_type: media_type.into(), width: 0, height: 0 }
}

fn clamp(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Whether a browser may be shown the file inline: only raster images that browsers decode
/// without running anything, and only when recognised from the bytes (`describe`).
pub fn shown_inline(media_type: &str) -> bool {
    matches!(media_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// The `Content-Type` and `Content-Disposition` a browser gets for a file: the image itself
/// for `shown_inline` types, else bytes to save (`application/octet-stream`, `attachment`), so
/// an uploaded HTML page or SVG never runs on this origin. The name is given as RFC 6266's
/// `filename*` (UTF-8, percent-encoded) with an ASCII `filename` for old clients.
pub fn browser_headers(media_type: &str, name: &str) -> (String, String) {
    let inline = shown_inline(media_type);
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    let disposition = format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let content_type = if inline { media_type } else { "application/octet-stream" };
    (content_type.to_string(), disposition)
}

/// Signs and checks download links: `/attachments/<id>?t=<user>.<version>.<expiry>.<mac>`, an
/// HMAC-SHA256 under a key made at start, so a link works on the process that gave it, until it
/// expires, and (checked when it is used) while its user may still see the attachment and
/// their token version is the one it was given at (logging out everywhere, a role change or
/// disabling the user end it). No token in a URL: a link that leaks lets someone fetch one file
/// for five minutes, not act as the user.
pub struct Links {
    key: ring::hmac::Key,
}

impl Default for Links {
    fn default() -> Self {
        Links::new(rand::random())
    }
}

impl Links {
    /// With this key.
    pub fn new(key: [u8; 32]) -> Links {
        Links { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key) }
    }

    fn signed(user: &str, version: u64, id: &str, expires_ms: i64) -> String {
        format!("{user}\n{version}\n{id}\n{expires_ms}")
    }

    /// The path a browser fetches attachment `id` from, for `user` at token version
    /// `version`, until `expires_ms`.
    pub fn path(&self, user: &str, version: u64, id: &str, expires_ms: i64) -> String {
        use base64::Engine;
        let signed = Links::signed(user, version, id, expires_ms);
        let tag = ring::hmac::sign(&self.key, signed.as_bytes());
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        format!("/attachments/{id}?t={user}.{version}.{expires_ms}.{mac}")
    }

    /// The user and token version a link's token `t` was given for, if it is this process's,
    /// for `id`, and has not expired at `now_ms`.
    pub fn check(&self, id: &str, t: &str, now_ms: i64) -> Option<(String, u64)> {
        let mut parts = t.splitn(4, '.');
        let (user, version, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (version, expires_ms): (u64, i64) = (version.parse().ok()?, expires.parse().ok()?);
        if expires_ms < now_ms {
            return None;
        }
        use base64::Engine;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).ok()?;
        // `verify` compares in constant time: the MAC is the secret here.
        let signed = Links::signed(user, version, id, expires_ms);
        ring::hmac::verify(&self.key, signed.as_bytes(), &tag).ok()?;
        Some((user.to_string(), version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "photo 1.jpg", "résumé.pdf", "日本.txt", ".profile"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(256);
        let marks = ["\u{200E}a", "a\u{200F}", "\u{061C}a"];
        for bad in ["", "  ", "a/b", "a\\b", "a\nb", "\u{202E}gpj.exe", ".", "..", &long]
            .iter()
            .chain(&marks)
        {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn what_a_file_is_comes_from_its_bytes() {
        // A 3x2 PNG's signature and IHDR.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
        let gif = b"GIF89a\x05\x00\x04\x00\x00\x00\x00";
        let d = |head: &[u8], name: &str| describe(head, name);
        assert_eq!(
            d(&png, "x.bin"),
            Described { media_type: "image/png".into(), width: 3, height: 2 }
        );
        assert_eq!((d(gif, "a").width, d(gif, "a").height), (5, 4));
        assert_eq!(d(b"%PDF-1.7 ...", "x").media_type, "application/pdf");
        // A name never makes something an image or a page.
        assert_eq!(d(b"<svg onload=alert(1)>", "x.png").media_type, "application/octet-stream");
        assert_eq!(d(b"<script>", "x.html").media_type, "application/octet-stream");
        assert_eq!(d(b"<svg>", "x.svg").media_type, "application/octet-stream");
        assert_eq!(d(b"hello", "notes.TXT").media_type, "text/plain");
        assert_eq!(d(b"", "").media_type, "application/octet-stream");
    }

    #[test]
    fn browsers_run_nothing_uploaded() {
        let (t, cd) = browser_headers("image/png", "cat.png");
        assert_eq!(
            (t.as_str(), cd.as_str()),
            ("image/png", "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png")
        );
        for kind in
            ["text/plain", "application/pdf", "image/bmp", "image/heic", "application/octet-stream"]
        {
            let (t, cd) = browser_headers(kind, "x");
            assert_eq!(t, "application/octet-stream", "{kind}");
            assert!(cd.starts_with("attachment;"), "{kind}");
        }
        let (_, cd) = browser_headers("text/plain", "a \"b\"; c=ü.txt");
        assert_eq!(
            cd,
            "attachment; filename=\"a _b_; c=_.txt\"; filename*=UTF-8''a%20%22b%22%3B%20c%3D%C3%BC.txt"
        );
    }

    #[test]
    fn links_work_for_their_file_until_they_expire() {
        let links = Links::new([1; 32]);
        let path = links.path("u1", 7, "a1", 1000);
        let t = path.split_once("?t=").unwrap().1;
        assert_eq!(path.split_once('?').unwrap().0, "/attachments/a1");
        assert_eq!(links.check("a1", t, 1000), Some(("u1".to_string(), 7)));
        assert_eq!(links.check("a1", t, 1001), None, "expired");
        assert_eq!(links.check("a2", t, 0), None, "another file");
        assert_eq!(links.check("a1", &t.replace("u1", "u2"), 0), None, "another user");
        assert_eq!(links.check("a1", &t.replace(".7.", ".8."), 0), None, "another version");
        assert_eq!(links.check("a1", &t.replace("1000", "9999"), 0), None, "a later expiry");
        assert_eq!(Links::new([2; 32]).check("a1", t, 0), None, "another process");
        assert_eq!(links.check("a1", "junk", 0), None);
    }
}
