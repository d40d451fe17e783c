//! A stale read returns a value some client wrote to that key, or nothing
//! (the dissertation's section 6.4 relaxes linearizability for reads that
//! may be stale, never into inventing data). Stale reads are served from
//! any node's state machine without confirming anything, so they are kept
//! out of the linearizability check; this checker is what they must obey.

use std::collections::BTreeMap;

use crate::kv::VALUE_ABSENT;

/// The values written to each key (values are unique per write).
#[derive(Debug, Default)]
pub struct StaleReads {
    /// Value -> the key it was written to.
    written: BTreeMap<u64, u64>,
}

impl StaleReads {
    /// A client asked to write `value` to `key`.
    pub fn on_write_invoked(&mut self, key: u64, value: u64) {
        self.written.insert(value, key);
    }

    /// `node` served a stale read of `key` that returned `value`.
    pub fn on_stale_read(&self, node: u64, key: u64, value: u64) -> Result<(), String> {
        if value == VALUE_ABSENT {
            return Ok(());
        }
        match self.written.get(&value) {
            Some(written_key) if *written_key == key => Ok(()),
            Some(written_key) => Err(format!(
                "node {node} returned {value} for key {key}, but {value} was written to key {written_key}"
            )),
            None => Err(format!(
                "node {node} returned {value} for key {key}, a value no client wrote"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_value_or_nothing_passes() {
        let mut checker = StaleReads::default();
        checker.on_write_invoked(1, 10);
        assert!(checker.on_stale_read(2, 1, 10).is_ok());
        assert!(checker.on_stale_read(2, 1, VALUE_ABSENT).is_ok());
    }

    #[test]
    fn an_unwritten_value_or_another_keys_value_is_a_violation() {
        let mut checker = StaleReads::default();
        checker.on_write_invoked(1, 10);
        assert!(checker.on_stale_read(2, 1, 11).is_err());
        assert!(checker.on_stale_read(2, 2, 10).is_err());
    }
}
