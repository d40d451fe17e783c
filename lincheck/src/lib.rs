//! Linearizability of the clients' key-value history (Herlihy and Wing; the
//! Raft paper's section 8 makes it the client-visible contract: "each
//! operation appears to execute instantaneously, exactly once, at some
//! point between its invocation and its response").
//!
//! The search is the Wing–Gong algorithm with Lowe's memoization, as in
//! porcupine: walk the history's call and return events in time order,
//! tentatively linearize a pending call whose effect the model accepts,
//! backtrack when a return is reached before its call was linearized, and
//! skip any (set of linearized operations, state) already explored. The
//! history is partitioned by key first (every operation touches one key).
//! An operation with an unknown outcome (timed out, or its node crashed)
//! returns "at infinity" with any output: it may take effect at any point
//! after its invocation, or never (it is then linearized after everything,
//! where nothing observes it). The search is bounded: beyond `steps_max`
//! it answers `TooExpensive` instead of hanging.
//!
//! Two users share this crate, so that one search judges both: the
//! simulator (`raftgres-sim`, whose clocks are event counters) and the
//! end-to-end nemesis suite (`raftgres-tests`, whose clocks are
//! nanoseconds since a campaign started). Values are `u64`s, unique per
//! write in a history, with [`VALUE_ABSENT`] standing for a missing key (a
//! delete is a put of [`VALUE_ABSENT`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashSet};

/// The value a missing key reads as; no write may store it.
pub const VALUE_ABSENT: u64 = 0;

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Set the key.
    Put {
        /// The value written (unique in the history).
        value: u64,
    },
    /// Read the key.
    Get,
    /// Set the key to `new` if it holds `expected`.
    CompareAndSwap {
        /// The value the key must hold.
        expected: u64,
        /// The value to store.
        new: u64,
    },
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The put took effect.
    Done,
    /// The value read (`VALUE_ABSENT` for a missing key).
    Value(u64),
    /// Whether the compare-and-swap swapped.
    Swapped(bool),
    /// No answer: the operation may or may not have taken effect.
    Unknown,
}

/// One client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it.
    pub client: u64,
    /// The key it touches.
    pub key: u64,
    /// The request.
    pub input: Input,
    /// The answer.
    pub output: Output,
    /// When it was invoked (a global event counter).
    pub invoked_at: u64,
    /// When it returned; `None` for an unknown outcome.
    pub returned_at: Option<u64>,
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations explains every answer.
    Linearizable,
    /// No order explains the answers to the operations on `key`.
    NotLinearizable {
        /// The key whose history is not linearizable.
        key: u64,
        /// Its operations, in invocation order, for the report.
        operations: Vec<Operation>,
    },
    /// The search for `key` exceeded its step budget.
    TooExpensive {
        /// The key given up on.
        key: u64,
    },
}

/// Checks `history`, at most `steps_max` search steps per key.
pub fn check(history: &[Operation], steps_max: u64) -> Verdict {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for operation in history {
        // A read without an answer has no effect and constrains nothing.
        if operation.input == Input::Get && operation.output == Output::Unknown {
            continue;
        }
        by_key.entry(operation.key).or_default().push(*operation);
    }
    let mut too_expensive = None;
    for (key, mut operations) in by_key {
        match check_single_key(&operations, steps_max) {
            Some(true) => {}
            Some(false) => {
                operations.sort_by_key(|operation| operation.invoked_at);
                return Verdict::NotLinearizable { key, operations };
            }
            None => too_expensive = too_expensive.or(Some(key)),
        }
    }
    match too_expensive {
        Some(key) => Verdict::TooExpensive { key },
        None => Verdict::Linearizable,
    }
}

/// The register model: the state after `operation`, or `None` if its
/// answer is impossible in `state`.
fn step(state: u64, operation: &Operation) -> Option<u64> {
    match (operation.input, operation.output) {
        (Input::Put { value }, Output::Done | Output::Unknown) => Some(value),
        (Input::Get, Output::Value(value)) => (value == state).then_some(state),
        (Input::CompareAndSwap { expected, new }, Output::Swapped(true)) => {
            (state == expected).then_some(new)
        }
        (Input::CompareAndSwap { expected, .. }, Output::Swapped(false)) => {
            (state != expected).then_some(state)
        }
        (Input::CompareAndSwap { expected, new }, Output::Unknown) => {
            Some(if state == expected { new } else { state })
        }
        _ => None,
    }
}

const NIL: usize = usize::MAX;

/// The events of one key's history as a doubly linked list (node 0 is the
/// head), so that linearized calls can be lifted out and put back in LIFO
/// order (dancing links).
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: the operation and whether it is the call event.
    operation_of: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call node: its return node.
    return_of: Vec<usize>,
}

impl EventList {
    fn new(operations: &[Operation]) -> EventList {
        // (time, 0 for a call and 1 for a return, operation): at equal times
        // calls come first, which treats touching operations as concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(operations.len() * 2);
        for (position, operation) in operations.iter().enumerate() {
            events.push((operation.invoked_at, 0, position));
            events.push((operation.returned_at.unwrap_or(u64::MAX), 1, position));
        }
        events.sort_unstable();
        let count = events.len() + 1;
        let mut list = EventList {
            next: (1..=count)
                .map(|next| if next == count { NIL } else { next })
                .collect(),
            prev: (0..count)
                .map(|node| if node == 0 { NIL } else { node - 1 })
                .collect(),
            operation_of: vec![NIL; count],
            is_call: vec![false; count],
            return_of: vec![NIL; count],
        };
        let mut call_node = vec![NIL; operations.len()];
        for (offset, (_, kind, position)) in events.iter().enumerate() {
            let node = offset + 1;
            list.operation_of[node] = *position;
            list.is_call[node] = *kind == 0;
            if *kind == 0 {
                call_node[*position] = node;
            } else {
                list.return_of[call_node[*position]] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.return_of[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.return_of[call]);
        self.relink(call);
    }
}

/// `Some(linearizable)`, or `None` when the budget ran out.
fn check_single_key(operations: &[Operation], steps_max: u64) -> Option<bool> {
    let mut list = EventList::new(operations);
    let words = operations.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut calls: Vec<(usize, u64)> = Vec::new();
    let mut state = VALUE_ABSENT;
    let mut entry = list.next[0];
    let mut steps = 0u64;
    while list.next[0] != NIL {
        steps += 1;
        if steps > steps_max {
            return None;
        }
        let position = list.operation_of[entry];
        if list.is_call[entry] {
            if let Some(new_state) = step(state, &operations[position]) {
                linearized[position / 64] |= 1 << (position % 64);
                if seen.insert((linearized.clone(), new_state)) {
                    calls.push((entry, state));
                    state = new_state;
                    list.lift(entry);
                    entry = list.next[0];
                    continue;
                }
                linearized[position / 64] &= !(1 << (position % 64));
            }
            entry = list.next[entry];
        } else {
            // A return reached before its call could be linearized: undo the
            // latest choice and try the next candidate after it.
            let Some((call, previous_state)) = calls.pop() else {
                return Some(false);
            };
            let popped = list.operation_of[call];
            linearized[popped / 64] &= !(1 << (popped % 64));
            state = previous_state;
            list.unlift(call);
            entry = list.next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn operation(
        client: u64,
        input: Input,
        output: Output,
        invoked_at: u64,
        returned_at: Option<u64>,
    ) -> Operation {
        Operation {
            client,
            key: 1,
            input,
            output,
            invoked_at,
            returned_at,
        }
    }

    fn put(client: u64, value: u64, invoked_at: u64, returned_at: u64) -> Operation {
        operation(
            client,
            Input::Put { value },
            Output::Done,
            invoked_at,
            Some(returned_at),
        )
    }

    fn get(client: u64, value: u64, invoked_at: u64, returned_at: u64) -> Operation {
        operation(
            client,
            Input::Get,
            Output::Value(value),
            invoked_at,
            Some(returned_at),
        )
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            put(1, 5, 0, 1),
            get(2, 5, 2, 3),
            put(1, 6, 4, 5),
            get(2, 6, 6, 7),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not_linearizable() {
        // The put of 6 completed before the get began, yet the get saw 5.
        let history = [put(1, 5, 0, 1), put(1, 6, 2, 3), get(2, 5, 4, 5)];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { key: 1, .. }
        ));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The get overlaps both puts, so it may see either value.
        for seen in [5, 6] {
            let history = [
                put(1, 5, 0, 10),
                put(2, 6, 1, 9),
                get(3, seen, 2, 8),
                get(3, 6 + 5 - seen, 11, 12),
            ];
            assert_eq!(
                check(&history, BUDGET),
                Verdict::Linearizable,
                "seen {seen}"
            );
        }
    }

    #[test]
    fn reads_must_agree_on_one_order() {
        // Two sequential reads after both concurrent puts finished cannot
        // see 5 then 6 then 5 again.
        let history = [
            put(1, 5, 0, 3),
            put(2, 6, 0, 3),
            get(3, 5, 4, 5),
            get(3, 6, 6, 7),
            get(3, 5, 8, 9),
        ];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn unknown_outcome_write_may_have_happened() {
        // The put of 7 timed out, but a later read saw 7: it happened.
        let unknown = operation(1, Input::Put { value: 7 }, Output::Unknown, 2, None);
        let history = [
            put(1, 5, 0, 1),
            unknown,
            get(2, 7, 10, 11),
            get(2, 7, 12, 13),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_write_may_not_have_happened() {
        let unknown = operation(1, Input::Put { value: 7 }, Output::Unknown, 2, None);
        let history = [put(1, 5, 0, 1), unknown, get(2, 5, 10, 11)];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_write_cannot_take_effect_before_its_invocation_nor_twice() {
        // Read 7 before the put of 7 was even invoked: impossible.
        let early = operation(1, Input::Put { value: 7 }, Output::Unknown, 20, None);
        let history = [put(1, 5, 0, 1), get(2, 7, 10, 11), early];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
        // It took effect (7 was read), was overwritten by 8, then read again:
        // that would need it to happen twice.
        let late = operation(1, Input::Put { value: 7 }, Output::Unknown, 2, None);
        let history = [
            late,
            get(2, 7, 10, 11),
            put(3, 8, 12, 13),
            get(2, 7, 14, 15),
        ];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn compare_and_swap_answers_must_match_the_state() {
        let swap = |expected, new, swapped, at| {
            operation(
                1,
                Input::CompareAndSwap { expected, new },
                Output::Swapped(swapped),
                at,
                Some(at + 1),
            )
        };
        let good = [
            put(1, 5, 0, 1),
            swap(5, 6, true, 2),
            swap(5, 7, false, 4),
            get(2, 6, 6, 7),
        ];
        assert_eq!(check(&good, BUDGET), Verdict::Linearizable);
        let bad = [put(1, 5, 0, 1), swap(5, 6, true, 2), swap(5, 7, true, 4)];
        assert!(matches!(
            check(&bad, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
        let absent = [swap(VALUE_ABSENT, 3, true, 0), get(2, 3, 2, 3)];
        assert_eq!(check(&absent, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_delete_is_a_put_of_the_absent_value() {
        // The end-to-end suite records a delete as a put of VALUE_ABSENT.
        let delete = |at| put(1, VALUE_ABSENT, at, at + 1);
        let good = [put(1, 5, 0, 1), delete(2), get(2, VALUE_ABSENT, 4, 5)];
        assert_eq!(check(&good, BUDGET), Verdict::Linearizable);
        // A read after a completed delete cannot see the old value.
        let resurrected = [put(1, 5, 0, 1), delete(2), get(2, 5, 4, 5)];
        assert!(matches!(
            check(&resurrected, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = get(2, 5, 4, 5);
        other.key = 2;
        // Key 2 was never written, so reading 5 there is wrong even though
        // key 1 holds 5.
        let history = [put(1, 5, 0, 1), other];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { key: 2, .. }
        ));
    }

    #[test]
    fn exhausted_budget_says_too_expensive_instead_of_hanging() {
        let history: Vec<Operation> = (0..40).map(|value| put(value, value + 1, 0, 100)).collect();
        assert_eq!(check(&history, 10), Verdict::TooExpensive { key: 1 });
        // With a real budget the same history is fine (any order works).
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }
}
