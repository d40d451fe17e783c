//! The event trace of a run: a stable FNV-1a hash over every event (so two
//! runs can be compared bit for bit) and, when asked for, readable lines.
//!
//! The hash is computed over compact binary words rather than the text, so
//! that hashing every event stays cheap in a 10,000-seed sweep; the words
//! carry the same information as the lines.

use std::fmt::Write as _;

/// FNV-1a, 64 bits. Implemented here because std's `DefaultHasher` is not
/// guaranteed to be stable across Rust releases, and trace hashes are
/// compared across builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Feeds a number as one 64-bit word (FNV-1a applied per word rather
    /// than per byte: eight times cheaper, equally stable; the trace hashes
    /// millions of words per seed).
    pub fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of one byte string.
    pub fn hash_bytes(bytes: &[u8]) -> u64 {
        let mut hasher = Fnv1a::default();
        hasher.write(bytes);
        hasher.finish()
    }
}

/// The trace of one run.
#[derive(Debug, Default)]
pub struct Trace {
    hash: Fnv1a,
    /// Readable lines, kept only with `--trace`.
    text: Option<String>,
    events: u64,
}

impl Trace {
    /// A trace that keeps readable text when `keep_text` is set.
    pub fn new(keep_text: bool) -> Trace {
        Trace {
            hash: Fnv1a::default(),
            text: keep_text.then(String::new),
            events: 0,
        }
    }

    /// Whether readable lines are kept (callers skip formatting otherwise).
    pub fn keeps_text(&self) -> bool {
        self.text.is_some()
    }

    /// Records one event: `kind` and `words` feed the hash; `describe` is
    /// called only when text is kept.
    pub fn record(
        &mut self,
        tick: u64,
        kind: &'static str,
        words: &[u64],
        describe: impl FnOnce() -> String,
    ) {
        self.events += 1;
        // Event kinds are distinct in their first eight bytes.
        let mut kind_word = [0u8; 8];
        let prefix = &kind.as_bytes()[..kind.len().min(8)];
        kind_word[..prefix.len()].copy_from_slice(prefix);
        self.hash.write_u64(u64::from_le_bytes(kind_word));
        self.hash.write_u64(tick);
        for word in words {
            self.hash.write_u64(*word);
        }
        if let Some(text) = &mut self.text {
            let _ = writeln!(text, "{tick:>7} {kind:<10} {}", describe());
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Takes the readable text, if kept.
    pub fn take_text(&mut self) -> Option<String> {
        self.text.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(Fnv1a::hash_bytes(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::hash_bytes(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a::hash_bytes(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn text_is_formatted_only_when_kept() {
        let mut silent = Trace::new(false);
        silent.record(1, "crash", &[2], || panic!("must not format"));
        let mut loud = Trace::new(true);
        loud.record(1, "crash", &[2], || "node 2".to_string());
        assert_eq!(silent.hash(), loud.hash());
        assert!(loud.take_text().unwrap().contains("crash      node 2"));
    }
}
