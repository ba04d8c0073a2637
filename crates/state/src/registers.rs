//! Named i64 registers: get, set, checked add, compare-and-set. A namespace
//! of their own, apart from the KV store (no revisions, no history): a
//! register is one current value. A register never written reads as 0.
//!
//! Memory: one entry per name ever written, kept until overwritten (there
//! is no delete); names are bounded by `REGISTER_NAME_BYTES_MAX`.

use std::collections::BTreeMap;

use crate::error::StateError;
use crate::event::{Event, RegisterEvent};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    values: BTreeMap<String, i64>,
}

impl Registers {
    /// The register's value; 0 if it was never written.
    pub fn get(&self, name: &str) -> i64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// How many registers have been written.
    /// Whether `name` was ever written.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every written register, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub(crate) fn from_values(values: BTreeMap<String, i64>) -> Registers {
        Registers { values }
    }

    /// Sets the register; returns its previous value.
    pub(crate) fn set(&mut self, name: &str, value: i64, events: &mut Vec<Event>) -> i64 {
        let old = self.get(name);
        self.write(name, old, value, events);
        old
    }

    /// Adds `delta`; returns the new value. Overflow is an error, not a
    /// wrap: a counter that wrapped would silently lie.
    pub(crate) fn add(
        &mut self,
        name: &str,
        delta: i64,
        events: &mut Vec<Event>,
    ) -> Result<i64, StateError> {
        let old = self.get(name);
        let new = old
            .checked_add(delta)
            .ok_or(StateError::Overflow { value: old, delta })?;
        self.write(name, old, new, events);
        Ok(new)
    }

    /// Sets the register to `new` if it holds `expected`. Returns whether it
    /// swapped and the value it holds now.
    pub(crate) fn compare_and_set(
        &mut self,
        name: &str,
        expected: i64,
        new: i64,
        events: &mut Vec<Event>,
    ) -> (bool, i64) {
        let old = self.get(name);
        if old != expected {
            return (false, old);
        }
        self.write(name, old, new, events);
        (true, new)
    }

    fn write(&mut self, name: &str, old: i64, new: i64, events: &mut Vec<Event>) {
        self.values.insert(name.to_owned(), new);
        events.push(Event::Register(RegisterEvent {
            name: name.to_owned(),
            old,
            new,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_registers_read_as_zero() {
        let r = Registers::default();
        assert_eq!(r.get("nope"), 0);
    }

    #[test]
    fn set_add_cas() {
        let mut r = Registers::default();
        let mut ev = Vec::new();
        assert_eq!(r.set("x", 5, &mut ev), 0);
        assert_eq!(r.add("x", -7, &mut ev), Ok(-2));
        assert_eq!(r.compare_and_set("x", 5, 1, &mut ev), (false, -2));
        assert_eq!(r.compare_and_set("x", -2, 1, &mut ev), (true, 1));
        assert_eq!(r.compare_and_set("y", 0, 9, &mut ev), (true, 9));
        assert_eq!(r.get("x"), 1);
        assert_eq!(ev.len(), 4, "a failed cas changes nothing");
        assert_eq!(
            ev[1],
            Event::Register(RegisterEvent {
                name: "x".into(),
                old: 5,
                new: -2
            })
        );
    }

    #[test]
    fn add_overflow_is_an_error_and_changes_nothing() {
        let mut r = Registers::default();
        let mut ev = Vec::new();
        r.set("x", i64::MAX - 1, &mut ev);
        assert_eq!(
            r.add("x", 2, &mut ev),
            Err(StateError::Overflow {
                value: i64::MAX - 1,
                delta: 2
            })
        );
        assert_eq!(r.get("x"), i64::MAX - 1);
        assert_eq!(r.add("y", i64::MIN, &mut ev), Ok(i64::MIN));
        assert!(r.add("y", -1, &mut ev).is_err());
        assert_eq!(ev.len(), 2);
    }
}
