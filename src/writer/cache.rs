//! The step cache: `(session_id, step_id) -> id` for recently touched
//! sessions, so that repeated `ensure_timestep` calls answer at once.

use std::collections::{HashMap, VecDeque};

/// Step ids of recently touched sessions: `(session_id, step_id) -> id` for
/// every step stored or queued, so repeated `ensure_timestep` calls answer
/// at once.
///
/// A session not here is loaded from the database before its steps are
/// created. Every timestep insert goes through this cache, so a session
/// that was never here has nothing queued: its committed rows are the truth,
/// and the load skips the queue. A session evicted or deleted may still have
/// queued operations, so until everything queued before that moment is done
/// (the marker in `forgotten`), its load waits its turn in the FIFO.
#[derive(Default)]
pub(crate) struct SessionCache {
    pub(crate) map: HashMap<String, HashMap<String, i64>>,
    order: VecDeque<String>,
    /// Session -> the count of operations that must be done before its
    /// committed rows tell the whole story.
    forgotten: HashMap<String, u64>,
    /// Counts forgettings (evictions, invalidations, deletes).
    epoch: u64,
    /// Session -> the `epoch` at which it was last forgotten, so that a load
    /// requested before that is not installed (its rows may be stale: a
    /// delete or a failed step came in between). Trimmed to recent entries.
    forgot_at: HashMap<String, u64>,
}

pub(crate) enum Lookup {
    Found(i64),
    Missing,
    Unloaded,
}

impl SessionCache {
    pub(crate) fn lookup(&self, session_id: &str, step_id: &str) -> Lookup {
        match self.map.get(session_id) {
            None => Lookup::Unloaded,
            Some(steps) => steps
                .get(step_id)
                .map_or(Lookup::Missing, |&id| Lookup::Found(id)),
        }
    }

    /// Whether a load of `session_id` must wait its turn in the FIFO, given
    /// how many operations are `done`.
    pub(crate) fn needs_fifo_load(&mut self, session_id: &str, done: u64) -> bool {
        match self.forgotten.get(session_id) {
            Some(&marker) if done >= marker => {
                self.forgotten.remove(session_id);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The current epoch: read it before requesting a load, and pass it to
    /// [`SessionCache::load`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn forgot(&mut self, session_id: &str, cap: usize) {
        self.epoch += 1;
        self.forgot_at.insert(session_id.to_string(), self.epoch);
        let keep = cap.max(1).saturating_mul(4) as u64;
        if self.forgot_at.len() as u64 > keep.saturating_mul(2) {
            let since = self.epoch.saturating_sub(keep);
            self.forgot_at.retain(|_, at| *at > since);
        }
    }

    /// Installs a session's steps, loaded after `since` was read. Returns
    /// `false` (nothing installed: load again) if the session was forgotten
    /// after that, so the loaded rows may be stale.
    pub(crate) fn load(
        &mut self,
        session_id: &str,
        steps: Vec<(String, i64)>,
        cap: usize,
        enqueued: u64,
        done: u64,
        since: u64,
    ) -> bool {
        if self.map.contains_key(session_id) {
            // Someone loaded it first; theirs is at least as new.
            return true;
        }
        if self.forgot_at.get(session_id).is_some_and(|&at| at > since) {
            return false;
        }
        self.map
            .insert(session_id.to_string(), steps.into_iter().collect());
        self.order.push_back(session_id.to_string());
        while self.map.len() > cap.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    if self.map.remove(&old).is_some() {
                        self.forgot(&old, cap);
                        self.forgotten.insert(old, enqueued);
                    }
                }
                None => break,
            }
        }
        if self.forgotten.len() > cap.max(1).saturating_mul(2) {
            self.forgotten.retain(|_, marker| *marker > done);
        }
        true
    }

    /// Forgets a session whose steps may be wrong here: its next load waits
    /// its turn until the operations counted by `marker` are done.
    pub(crate) fn invalidate(&mut self, session_id: &str, marker: u64, cap: usize) {
        if self.map.remove(session_id).is_some() {
            self.order.retain(|s| s != session_id);
        }
        self.forgot(session_id, cap);
        self.forgotten
            .entry(session_id.to_string())
            .and_modify(|m| *m = (*m).max(marker))
            .or_insert(marker);
    }

    /// Forgets a session that is being deleted: its loads wait their turn
    /// until [`SessionCache::deleted`].
    pub(crate) fn forget(&mut self, session_id: &str, cap: usize) {
        self.map.remove(session_id);
        self.order.retain(|s| s != session_id);
        self.forgot(session_id, cap);
        self.forgotten.insert(session_id.to_string(), u64::MAX);
    }

    /// The delete has run: everything before it is done.
    pub(crate) fn deleted(&mut self, session_id: &str) {
        if self.forgotten.get(session_id) == Some(&u64::MAX) {
            self.forgotten.remove(session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_requested_before_a_forget_is_not_installed() {
        let mut cache = SessionCache::default();
        let since = cache.epoch();
        // A delete (or a failed step) forgets the session while its load is
        // under way: the loaded rows may be stale.
        cache.forget("s", 8);
        cache.deleted("s");
        assert!(!cache.load("s", vec![("old".into(), 1)], 8, 0, 0, since));
        assert!(matches!(cache.lookup("s", "old"), Lookup::Unloaded));
        // A load requested after it is installed.
        let since = cache.epoch();
        assert!(cache.load("s", vec![], 8, 0, 0, since));
        assert!(matches!(cache.lookup("s", "old"), Lookup::Missing));
    }

    #[test]
    fn eviction_forgets_the_oldest_session() {
        let mut cache = SessionCache::default();
        for (n, s) in ["a", "b", "c"].into_iter().enumerate() {
            let since = cache.epoch();
            assert!(cache.load(s, vec![("k".into(), n as i64)], 2, 5, 0, since));
        }
        assert!(matches!(cache.lookup("a", "k"), Lookup::Unloaded));
        assert!(cache.needs_fifo_load("a", 4));
        assert!(!cache.needs_fifo_load("a", 5));
        assert!(matches!(cache.lookup("c", "k"), Lookup::Found(2)));
    }
}
