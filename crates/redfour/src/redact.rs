//! Secrets out of everything this crate shows: the URLs in messages, logs and `Debug` output,
//! and the details redis-rs adds to its errors about them.
//!
//! redis-rs 1.x takes credentials from a URL in two places (`url_to_tcp_connection_info` and
//! `url_to_unix_connection_info` in its `connection.rs`):
//! - `redis://`, `rediss://`, `valkey://`, `valkeys://`: the user info, `user:password@`
//!   (percent-decoded); the query's only parameter is `protocol`, the path is the database.
//! - `unix://`, `redis+unix://`, `valkey+unix://`: the query parameters `pass`, `user`, `db`
//!   and `protocol` (percent-decoded, the last of repeated ones winning); the path is the socket.
//!
//! What is shown is what is known to be harmless (scheme, host, port, socket path, a database
//! number, a protocol version, a user name, `#insecure`), and `***` stands for everything else:
//! a password wherever it is, the values of other parameters (`?password=` is no redis-rs
//! parameter, but whoever wrote it meant a secret), other fragments, and the whole of a URL that
//! does not parse, where nobody can tell which part is the password.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What stands for a hidden part.
const HIDDEN: &str = "***";

/// Schemes whose path names a Unix socket, and whose query carries the credentials.
const UNIX_SCHEMES: [&str; 3] = ["unix", "redis+unix", "valkey+unix"];

/// Query parameters whose *name* may be shown (a value only as [`shown_value`] allows). The
/// names are matched without regard to case, as readers would.
const KNOWN_PARAMETERS: [&str; 5] = ["db", "protocol", "user", "pass", "password"];

/// `url` with every secret replaced by `***`, for messages, logs and `Debug`.
pub(crate) fn url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => parsed_url(&parsed),
        Err(_) => unparsable(url),
    }
}

/// Why `url` does not parse as a URL at all (the reason never quotes it), or `None` when it
/// does.
pub(crate) fn parse_problem(url: &str) -> Option<url::ParseError> {
    url::Url::parse(url).err()
}

/// The scheme alone: in a URL that does not parse, any part may be a password.
fn unparsable(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, _)) if is_scheme(scheme) => format!("{scheme}://{HIDDEN}"),
        _ => HIDDEN.to_owned(),
    }
}

fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn parsed_url(url: &url::Url) -> String {
    let mut out = format!("{}:", url.scheme());
    if url.cannot_be_a_base() {
        // `redis:something`: no scheme of redis-rs takes an opaque path, so it is nothing
        // worth showing, and may be anything.
        out.push_str(HIDDEN);
    } else {
        if url.has_authority() {
            out.push_str("//");
            match url.password() {
                Some(_) => {
                    let _ = write!(out, "{}:{HIDDEN}@", url.username());
                }
                // `redis://secret@host`: a password where the user name goes, a common slip.
                None if !url.username().is_empty() => {
                    let _ = write!(out, "{HIDDEN}@");
                }
                None => {}
            }
            out.push_str(url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                let _ = write!(out, ":{port}");
            }
        }
        out.push_str(&path(url));
    }
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    if let Some(fragment) = url.fragment() {
        out.push('#');
        out.push_str(if fragment == "insecure" {
            fragment
        } else {
            HIDDEN
        });
    }
    out
}

/// A socket's path as it is; a TCP URL's path only when it is a database number.
fn path(url: &url::Url) -> Cow<'_, str> {
    let path = url.path();
    if UNIX_SCHEMES.contains(&url.scheme()) {
        return Cow::Borrowed(path);
    }
    let db = path.trim_matches('/');
    if db.is_empty() || db.parse::<i64>().is_ok() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{HIDDEN}"))
    }
}

/// Each `&`-separated parameter judged on its decoded name and value, as redis-rs reads them
/// (so `p%61ss=` is `pass=`), and shown as written or hidden.
fn redact_query(query: &str) -> String {
    let shown: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            let Some((name, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
                // An empty parameter (`a=1&&b=2`) has nothing to hide.
                return Cow::Borrowed(pair);
            };
            if shown_value(&name, &value) {
                return Cow::Borrowed(pair);
            }
            if KNOWN_PARAMETERS
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known))
            {
                let written = pair.split_once('=').map_or(pair, |(name, _)| name);
                Cow::Owned(format!("{written}={HIDDEN}"))
            } else {
                // An unknown name may itself be the secret (`?s3cret`).
                Cow::Borrowed(HIDDEN)
            }
        })
        .collect();
    shown.join("&")
}

/// Whether a parameter's value is harmless: a database number, a protocol version redis-rs
/// accepts, or a user name.
fn shown_value(name: &str, value: &str) -> bool {
    match name {
        "db" => value.parse::<i64>().is_ok(),
        "protocol" => matches!(value, "2" | "3" | "resp2" | "resp3"),
        "user" => true,
        _ => false,
    }
}

/// A configuration error of redis-rs about a URL, without the detail some of them quote from
/// it: "Invalid protocol version - InvalidClientConfig: <the parameter's value>".
pub(crate) fn config_error(err: redis::RedisError) -> redis::RedisError {
    if err.detail().is_none() {
        return err;
    }
    let shown = err.to_string();
    // The descriptions are static, so a copy without the detail must name a known one.
    let description = ["Invalid protocol version"]
        .into_iter()
        .find(|known| shown.starts_with(known))
        .unwrap_or("invalid client configuration (details hidden: they may quote the URL)");
    redis::RedisError::from((err.kind(), description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn shown(input: &str, expected: &str) {
        assert_eq!(url(input), expected, "{input}");
    }

    #[test]
    fn userinfo_passwords() {
        shown("redis://127.0.0.1:6379", "redis://127.0.0.1:6379");
        shown("redis://user:pw@host:1/2", "redis://user:***@host:1/2");
        shown("redis://:pw@host/0", "redis://:***@host/0");
        shown("rediss://pw@host", "rediss://***@host");
        shown(
            "rediss://u:pw@host:1/0#insecure",
            "rediss://u:***@host:1/0#insecure",
        );
        shown("valkey://:pw@host:1", "valkey://:***@host:1");
        shown("valkeys://u:pw@host:1", "valkeys://u:***@host:1");
        // Percent-encoded, with a `:` or an unencoded `@` in it, in upper case: all hidden.
        shown("redis://:p%40ss%3Aw@host", "redis://:***@host");
        shown("redis://u:p:w@host", "redis://u:***@host");
        shown("redis://u:p@ss@host", "redis://u:***@host");
        shown("REDIS://:pw@host:1", "redis://:***@host:1");
        shown("redis://[::1]:6379/3", "redis://[::1]:6379/3");
    }

    #[test]
    fn unix_socket_parameters() {
        for scheme in UNIX_SCHEMES {
            shown(
                &format!("{scheme}:///tmp/r/sock?pass=S3cret&db=99"),
                &format!("{scheme}:///tmp/r/sock?pass=***&db=99"),
            );
        }
        shown(
            "unix:///s?user=alice&pass=pw&protocol=resp3",
            "unix:///s?user=alice&pass=***&protocol=resp3",
        );
        // Percent-encoded names and values, repeated parameters, other cases, empty values.
        shown("unix:///s?p%61ss=pw", "unix:///s?p%61ss=***");
        shown("unix:///s?pass=p%26w%3Dx", "unix:///s?pass=***");
        shown(
            "unix:///s?pass=a&pass=b&pass",
            "unix:///s?pass=***&pass=***&pass=***",
        );
        shown(
            "unix:///s?PASS=pw&Password=pw",
            "unix:///s?PASS=***&Password=***",
        );
        shown("unix:///s?pass=", "unix:///s?pass=***");
        shown("unix:///s?pass+=pw", "unix:///s?***");
        // Values that are not what the parameter takes may hold anything.
        shown("unix:///s?db=1;pass=pw", "unix:///s?db=***");
        shown("unix:///s?protocol=pw", "unix:///s?protocol=***");
        // Unknown names: the name itself may be the secret.
        shown("unix:///s?pw", "unix:///s?***");
        shown("unix:///s?token=pw&&db=2", "unix:///s?***&&db=2");
        // `unix:` without `//`, with `localhost`, and with user info (redis-rs ignores it).
        shown("unix:/tmp/s?pass=pw", "unix:/tmp/s?pass=***");
        shown(
            "unix://localhost/tmp/s?pass=pw",
            "unix://localhost/tmp/s?pass=***",
        );
        shown(
            "unix://u:pw@localhost/tmp/s",
            "unix://u:***@localhost/tmp/s",
        );
    }

    #[test]
    fn tcp_query_strings_and_fragments() {
        shown(
            "redis://127.0.0.1:1/?password=S3cret",
            "redis://127.0.0.1:1/?password=***",
        );
        shown(
            "redis://h/?pass=pw&protocol=3",
            "redis://h/?pass=***&protocol=3",
        );
        shown("redis://h/#pw", "redis://h/#***");
        shown("rediss://h/#insecure", "rediss://h/#insecure");
        // A path that is no database number.
        shown("redis://h/pw", "redis://h/***");
        shown("redis://h/-1", "redis://h/-1");
    }

    #[test]
    fn unparsable_urls_show_their_scheme_only() {
        for (input, expected) in [
            ("redis://user:pw", "redis://***"),
            ("redis://:pw", "redis://***"),
            ("redis://:pa/ss@host", "redis://***"),
            ("redis://u:p?w#d@host:x", "redis://***"),
            ("unix://:pw@/tmp/s", "unix://***"),
            ("pw", "***"),
            ("127.0.0.1:6379", "***"),
            ("://pw", "***"),
            ("redis:pw", "redis:***"),
        ] {
            shown(input, expected);
        }
    }

    #[test]
    fn control_characters_do_not_split_a_password() {
        // The URL parser drops tabs and newlines, as redis-rs's does.
        shown("redis://:p\tw\n@host", "redis://:***@host");
        shown("unix:///s?pa\nss=pw", "unix:///s?pass=***");
    }

    #[test]
    fn config_errors_lose_their_detail() {
        let err = redis::Client::open("unix:///s?protocol=S3cret").unwrap_err();
        assert!(
            err.to_string().contains("S3cret"),
            "redis-rs quotes it: {err}"
        );
        let err = config_error(err);
        assert!(!err.to_string().contains("S3cret"), "{err}");
        assert!(
            err.to_string().starts_with("Invalid protocol version"),
            "{err}"
        );
        assert_eq!(err.kind(), redis::ErrorKind::InvalidClientConfig);
    }
}
