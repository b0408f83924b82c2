//! Tokens inside server URLs: taken out to be used as the token, and never
//! shown.
//!
//! libsql's clients accept the token as a query parameter
//! (`libsql://db.turso.io?authToken=…`); `auth_token` and `jwt` are
//! accepted too. Whatever the form, the token is removed from the URL the
//! connection uses, and every URL this crate prints is first passed through
//! [`redact`].

/// Query parameters that carry a token, compared without regard to case.
const TOKEN_KEYS: [&str; 3] = ["authtoken", "auth_token", "jwt"];

/// What replaces a secret in a URL that is shown.
const REDACTED: &str = "<redacted>";

fn is_token_key(key: &str) -> bool {
    TOKEN_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
}

/// The URL split into what comes before the query, the query's pairs, and
/// the fragment (with its `#`).
fn parts(url: &str) -> (&str, Vec<&str>, &str) {
    let (rest, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    match rest.split_once('?') {
        Some((base, query)) => (
            base,
            query.split('&').filter(|p| !p.is_empty()).collect(),
            fragment,
        ),
        None => (rest, Vec::new(), fragment),
    }
}

fn join(base: &str, pairs: &[String], fragment: &str) -> String {
    let mut out = base.to_string();
    if !pairs.is_empty() {
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out.push_str(fragment);
    out
}

/// Decodes `%XX` escapes (a token is base64url, so rarely has any).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without its token parameters, and the token (the last non-empty
/// one, if several are given).
pub(crate) fn take_token(url: &str) -> (String, Option<String>) {
    let (base, pairs, fragment) = parts(url);
    let mut token = None;
    let mut kept = Vec::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_token_key(key) {
            if !value.is_empty() {
                token = Some(percent_decode(value));
            }
        } else {
            kept.push(pair.to_string());
        }
    }
    (join(base, &kept, fragment), token)
}

/// The host (and port) of a server URL: its authority without any user
/// information; empty without a `scheme://`.
pub(crate) fn host(url: &str) -> &str {
    let (base, _, _) = parts(url);
    let Some((_, rest)) = base.split_once("://") else {
        return "";
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rsplit('@').next().unwrap_or(authority)
}

/// The URL as it may be shown: each token parameter's value, and any user
/// information before the host (`user:password@`), replaced by
/// `<redacted>`. A file path comes back as it was.
pub(crate) fn redact(url: &str) -> String {
    let (base, pairs, fragment) = parts(url);
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{REDACTED}{}", &rest[at..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_token_key(key) => format!("{key}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    join(&base, &pairs, fragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_authority_without_user_information() {
        assert_eq!(host("libsql://db.turso.io?authToken=s3cret"), "db.turso.io");
        assert_eq!(
            host("https://user:s3cret@db.example.io:8080/v2#x"),
            "db.example.io:8080"
        );
        assert_eq!(host("/var/runs/traces.db"), "");
    }

    #[test]
    fn a_token_in_the_query_is_taken_out() {
        let (url, token) = take_token("libsql://db.turso.io?authToken=abc.def-ghi");
        assert_eq!(url, "libsql://db.turso.io");
        assert_eq!(token.as_deref(), Some("abc.def-ghi"));
        let (url, token) = take_token("https://h:8080/?tls=1&AUTH_TOKEN=x%2Fy&a=b#frag");
        assert_eq!(url, "https://h:8080/?tls=1&a=b#frag");
        assert_eq!(token.as_deref(), Some("x/y"));
        let (url, token) = take_token("http://h?jwt=t1");
        assert_eq!((url.as_str(), token.as_deref()), ("http://h", Some("t1")));
        let (url, token) = take_token("http://h?tls=0");
        assert_eq!((url.as_str(), token), ("http://h?tls=0", None));
    }

    #[test]
    fn shown_urls_hold_no_secret() {
        assert_eq!(
            redact("libsql://db.turso.io?authToken=secret&tls=1"),
            "libsql://db.turso.io?authToken=<redacted>&tls=1"
        );
        assert_eq!(
            redact("https://user:secret@h:1/x?jwt=secret"),
            "https://<redacted>@h:1/x?jwt=<redacted>"
        );
        assert_eq!(redact("traces.db"), "traces.db");
        assert_eq!(redact("http://h/p"), "http://h/p");
    }
}
