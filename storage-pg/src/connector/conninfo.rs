//! Takes the TLS keys raftgres handles itself out of a conninfo and leaves
//! every other key exactly as written.
//!
//! tokio-postgres knows `sslmode` only up to `require` and refuses
//! `sslrootcert` as an unknown option, so `sslmode` and `sslrootcert` are
//! read here and the rest of the conninfo is handed to
//! `tokio_postgres::Config` untouched. Both conninfo forms libpq accepts are
//! understood: key/value (`host=db sslmode=verify-full`) and URL
//! (`postgresql://db/node1?sslmode=verify-full`).

/// A conninfo with `sslmode` and `sslrootcert` taken out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SplitConninfo {
    /// The conninfo without the two keys, for `tokio_postgres::Config`.
    pub(crate) rest: String,
    /// The last `sslmode` value, if any (libpq lets a later key win).
    pub(crate) ssl_mode: Option<String>,
    /// The last `sslrootcert` value, if any.
    pub(crate) ssl_root_certificate: Option<String>,
}

impl SplitConninfo {
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.ssl_mode = Some(value),
            "sslrootcert" => self.ssl_root_certificate = Some(value),
            _ => return false,
        }
        true
    }
}

/// Splits the TLS keys out of a key/value or URL conninfo; the error says
/// what is malformed.
pub(crate) fn split_tls_keys(conninfo: &str) -> Result<SplitConninfo, String> {
    let trimmed = conninfo.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_key_values(conninfo)
    }
}

/// One `key=value` pair of a key/value conninfo: the decoded key and value,
/// and where the pair stands in the original text.
struct Pair {
    key: String,
    value: String,
    text: std::ops::Range<usize>,
}

fn split_key_values(conninfo: &str) -> Result<SplitConninfo, String> {
    let mut split = SplitConninfo::default();
    let mut kept = Vec::new();
    for pair in key_value_pairs(conninfo)? {
        if !split.take(&pair.key, pair.value) {
            kept.push(&conninfo[pair.text]);
        }
    }
    split.rest = kept.join(" ");
    Ok(split)
}

/// Tokenises libpq's key/value syntax: `key = value` with optional spaces
/// around `=`, values either bare or single-quoted, and backslash escaping
/// the next character in both.
fn key_value_pairs(conninfo: &str) -> Result<Vec<Pair>, String> {
    let characters: Vec<(usize, char)> = conninfo.char_indices().collect();
    let offset_at = |position: usize| {
        characters
            .get(position)
            .map_or(conninfo.len(), |(offset, _)| *offset)
    };
    let skip_whitespace = |mut position: usize| {
        while characters
            .get(position)
            .is_some_and(|(_, character)| character.is_whitespace())
        {
            position += 1;
        }
        position
    };
    let mut pairs = Vec::new();
    let mut position = skip_whitespace(0);
    while position < characters.len() {
        let start = position;
        let mut key = String::new();
        while let Some(&(_, character)) = characters.get(position) {
            if character == '=' || character.is_whitespace() {
                break;
            }
            key.push(character);
            position += 1;
        }
        position = skip_whitespace(position);
        if characters.get(position).map(|(_, character)| *character) != Some('=') {
            return Err(format!("missing \"=\" after {key:?} in the conninfo"));
        }
        position = skip_whitespace(position + 1);
        let mut value = String::new();
        let quoted = characters.get(position).map(|(_, character)| *character) == Some('\'');
        if quoted {
            position += 1;
        }
        let mut closed = !quoted;
        while let Some(&(_, character)) = characters.get(position) {
            position += 1;
            match character {
                '\\' => {
                    if let Some(&(_, escaped)) = characters.get(position) {
                        value.push(escaped);
                        position += 1;
                    }
                }
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                character if !quoted && character.is_whitespace() => {
                    position -= 1;
                    break;
                }
                character => value.push(character),
            }
        }
        if !closed {
            return Err(format!(
                "unterminated quoted value of {key:?} in the conninfo"
            ));
        }
        pairs.push(Pair {
            key,
            value,
            text: offset_at(start)..offset_at(position),
        });
        position = skip_whitespace(position);
    }
    Ok(pairs)
}

fn split_url(url: &str) -> Result<SplitConninfo, String> {
    let mut split = SplitConninfo::default();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    for parameter in query.into_iter().flat_map(|query| query.split('&')) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if !split.take(&percent_decode(key)?, percent_decode(value)?) {
            kept.push(parameter);
        }
    }
    split.rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(split)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] == b'%' {
            let byte = text
                .get(position + 1..position + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {text:?}"))?;
            decoded.push(byte);
            position += 3;
        } else {
            decoded.push(bytes[position]);
            position += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_tls_keys_are_taken_out_and_the_rest_is_kept_as_written() {
        let split = split_tls_keys(
            "host=db.example port = 5433 sslmode=verify-full sslrootcert='/etc/ca dir/root.crt' password='it\\'s' user=raft",
        )
        .unwrap();
        assert_eq!(split.ssl_mode.as_deref(), Some("verify-full"));
        assert_eq!(
            split.ssl_root_certificate.as_deref(),
            Some("/etc/ca dir/root.crt")
        );
        assert_eq!(
            split.rest,
            "host=db.example port = 5433 password='it\\'s' user=raft"
        );
    }

    #[test]
    fn a_later_key_wins_as_in_libpq() {
        let split = split_tls_keys("sslmode=require host=a sslmode=disable").unwrap();
        assert_eq!(split.ssl_mode.as_deref(), Some("disable"));
        assert_eq!(split.rest, "host=a");
    }

    #[test]
    fn url_tls_parameters_are_taken_out_and_decoded() {
        let split = split_tls_keys(
            "postgresql://raft@db:5432/node1?sslrootcert=%2Fetc%2Froot.crt&application_name=x&sslmode=verify-ca",
        )
        .unwrap();
        assert_eq!(split.ssl_mode.as_deref(), Some("verify-ca"));
        assert_eq!(split.ssl_root_certificate.as_deref(), Some("/etc/root.crt"));
        assert_eq!(
            split.rest,
            "postgresql://raft@db:5432/node1?application_name=x"
        );
        let plain = split_tls_keys("postgres://db/node1").unwrap();
        assert_eq!(plain.rest, "postgres://db/node1");
        assert_eq!(plain.ssl_mode, None);
    }

    #[test]
    fn malformed_conninfo_is_reported() {
        assert!(split_tls_keys("host").is_err());
        assert!(split_tls_keys("sslrootcert='/never/closed").is_err());
        assert!(split_tls_keys("postgresql://db?sslmode=%zz").is_err());
    }
}
