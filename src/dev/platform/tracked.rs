//! Maps and lists that remember what the change in progress touched, so the change can be
//! journalled from those keys alone and undone without a copy of the whole state.

use std::collections::BTreeMap;

/// A map of entities by folded name that remembers, for the change in progress, the value each
/// touched key had before it (`None`: absent). A change then costs what it touches: it is
/// made in place, its journal line is built from the keys it touched, and a refused or failed
/// change is rolled back from what was remembered, with no copy of the whole state.
#[derive(Debug, Clone)]
pub(crate) struct Tracked<T> {
    map: BTreeMap<Box<str>, T>,
    before: BTreeMap<Box<str>, Option<T>>,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }
}

/// Equal when the entities are; what a change in progress remembers does not count.
impl<T: PartialEq> PartialEq for Tracked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<T: Eq> Eq for Tracked<T> {}

impl<T: Clone + PartialEq> Tracked<T> {
    pub fn get(&self, key: &str) -> Option<&T> {
        self.map.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn values(&self) -> std::collections::btree_map::Values<'_, Box<str>, T> {
        self.map.values()
    }

    fn remember(&mut self, key: &str) {
        if !self.before.contains_key(key) {
            let old = self.map.get(key).cloned();
            self.before.insert(key.into(), old);
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        if self.map.contains_key(key) {
            self.remember(key);
        }
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: String, value: T) -> Option<T> {
        self.remember(&key);
        self.map.insert(key.into_boxed_str(), value)
    }

    pub fn remove(&mut self, key: &str) -> Option<T> {
        if self.map.contains_key(key) {
            self.remember(key);
        }
        self.map.remove(key)
    }

    /// Every value, mutably: each is remembered first, so this costs the size of the map.
    pub fn values_mut(&mut self) -> std::collections::btree_map::ValuesMut<'_, Box<str>, T> {
        let keys: Vec<Box<str>> = self
            .map
            .keys()
            .filter(|k| !self.before.contains_key(*k))
            .cloned()
            .collect();
        for key in keys {
            self.remember(&key);
        }
        self.map.values_mut()
    }

    /// Visits the keys the change in progress touched whose value differs from before it, in
    /// key order, each with its mutable new value (`None`: removed). Costs what was touched.
    pub fn for_each_changed(&mut self, mut visit: impl FnMut(&str, Option<&mut T>)) {
        let changed: Vec<Box<str>> = self
            .before
            .iter()
            .filter(|(k, old)| old.as_ref() != self.map.get(&**k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in changed {
            visit(&key, self.map.get_mut(&key));
        }
    }

    /// Ends the change in progress: what it did stays.
    pub fn settle(&mut self) {
        self.before.clear();
    }

    /// Undoes the change in progress.
    pub fn roll_back(&mut self) {
        for (key, old) in std::mem::take(&mut self.before) {
            match old {
                Some(v) => {
                    self.map.insert(key, v);
                }
                None => {
                    self.map.remove(&key);
                }
            }
        }
    }
}

/// The entries of a [`Tracked`] map being loaded, gathered in a list and built into the map at
/// once, which fills its nodes: inserted one by one, even in key order, a `BTreeMap` leaves each
/// node about half empty, and for tens of thousands of users that is a good part of the memory
/// they take.
pub(crate) struct Loading<T> {
    entries: Vec<(Box<str>, T)>,
}

impl<T> Loading<T> {
    pub fn with_capacity(entries: usize) -> Self {
        Loading {
            entries: Vec::with_capacity(entries),
        }
    }

    pub fn push(&mut self, key: String, value: T) {
        self.entries.push((key.into_boxed_str(), value));
    }

    /// Whether a key was pushed twice so far.
    pub fn repeats_a_key(&self) -> bool {
        let mut keys: Vec<&str> = self.entries.iter().map(|(k, _)| &**k).collect();
        keys.sort_unstable();
        keys.windows(2).any(|pair| pair[0] == pair[1])
    }

    /// The map; `None` when a key was pushed twice.
    pub fn finish(mut self) -> Option<Tracked<T>> {
        // In place: a stable sort would take a scratch copy of the entries.
        self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if self.entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        Some(Tracked {
            map: self.entries.into_iter().collect(),
            before: BTreeMap::new(),
        })
    }
}

/// A short list that keeps its value from before the change in progress on first mutable use.
#[derive(Debug, Clone)]
pub(crate) struct TrackedList<T> {
    list: Vec<T>,
    before: Option<Vec<T>>,
}

impl<T> Default for TrackedList<T> {
    fn default() -> Self {
        TrackedList {
            list: Vec::new(),
            before: None,
        }
    }
}

impl<'a, T> IntoIterator for &'a TrackedList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl<T: PartialEq> PartialEq for TrackedList<T> {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl<T: Eq> Eq for TrackedList<T> {}

impl<T> From<Vec<T>> for TrackedList<T> {
    fn from(list: Vec<T>) -> Self {
        TrackedList { list, before: None }
    }
}

impl<T> std::ops::Deref for TrackedList<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.list
    }
}

impl<T: Clone> std::ops::DerefMut for TrackedList<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        if self.before.is_none() {
            self.before = Some(self.list.clone());
        }
        &mut self.list
    }
}

impl<T: Clone + PartialEq> TrackedList<T> {
    /// The new list, when the change in progress changed it.
    pub fn changed(&self) -> Option<Vec<T>> {
        self.before
            .as_ref()
            .filter(|old| **old != self.list)
            .map(|_| self.list.clone())
    }

    pub fn settle(&mut self) {
        self.before = None;
    }

    pub fn roll_back(&mut self) {
        if let Some(old) = self.before.take() {
            self.list = old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracked_map_reports_and_undoes_only_what_a_change_touched() {
        let mut m: Tracked<u32> = Tracked::default();
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            m.insert(k.into(), v);
        }
        m.settle();
        m.for_each_changed(|k, _| panic!("{k} did not change"));

        m.insert("d".into(), 4);
        m.remove("a");
        *m.get_mut("b").unwrap_or(&mut 0) = 20;
        // Touched and put back: no change.
        *m.get_mut("c").unwrap_or(&mut 0) = 3;
        let mut changed: Vec<(String, Option<u32>)> = Vec::new();
        m.for_each_changed(|k, v| changed.push((k.to_string(), v.map(|v| *v))));
        assert_eq!(
            changed,
            vec![
                ("a".into(), None),
                ("b".into(), Some(20)),
                ("d".into(), Some(4))
            ]
        );
        m.roll_back();
        let now: Vec<u32> = m.values().copied().collect();
        assert_eq!(now, vec![1, 2, 3]);
        m.for_each_changed(|k, _| panic!("{k} was rolled back"));

        let mut list: TrackedList<u32> = vec![1, 2].into();
        list.push(3);
        assert_eq!(list.changed(), Some(vec![1, 2, 3]));
        list.roll_back();
        assert_eq!(*list, vec![1, 2]);
        assert_eq!(list.changed(), None);
    }
}
