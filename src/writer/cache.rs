//! The step cache: `(session_id, step_id) -> id` for recently touched
//! sessions, so that repeated `ensure_timestep` calls answer at once.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use crate::error::TracingError;

/// The answer to a load of a session's steps.
pub(crate) type StepsAnswer = oneshot::Receiver<Result<Vec<(String, i64)>, TracingError>>;

/// A load of a session's steps asked for when the session was ensured, ahead
/// of its first `ensure_timestep`, so that the round trip overlaps whatever
/// the rollout does in between (an environment reset, a first model call).
pub(crate) struct Prefetch {
    /// The [`SessionCache::epoch`] read before the load was asked for.
    pub(crate) since: u64,
    pub(crate) answer: StepsAnswer,
}

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
    /// Loads asked for ahead (see [`Prefetch`]), taken by the session's
    /// first `ensure_timestep`; at most the cache's capacity, oldest dropped.
    prefetched: HashMap<String, Prefetch>,
    /// Sessions in the order their loads were asked for ahead; may name
    /// sessions whose load was taken since.
    prefetch_order: VecDeque<String>,
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

    /// Whether a load of `session_id` asked for now, ahead of its first
    /// `ensure_timestep`, could be installed: the session is not here, no
    /// load of it is already asked for ahead, and nothing of it waits in the
    /// FIFO (see [`SessionCache::needs_fifo_load`]).
    pub(crate) fn wants_prefetch(&mut self, session_id: &str, done: u64) -> bool {
        !self.map.contains_key(session_id)
            && !self.prefetched.contains_key(session_id)
            && !self.needs_fifo_load(session_id, done)
    }

    /// Keeps a load asked for ahead, dropping the oldest past `cap`.
    pub(crate) fn prefetching(&mut self, session_id: &str, prefetch: Prefetch, cap: usize) {
        let cap = cap.max(1);
        self.prefetched.insert(session_id.to_string(), prefetch);
        self.prefetch_order.push_back(session_id.to_string());
        while self.prefetched.len() > cap {
            match self.prefetch_order.pop_front() {
                Some(old) => {
                    self.prefetched.remove(&old);
                }
                None => break,
            }
        }
        if self.prefetch_order.len() > cap.saturating_mul(2) {
            let prefetched = &self.prefetched;
            self.prefetch_order.retain(|s| prefetched.contains_key(s));
        }
    }

    /// Takes the load of `session_id` asked for ahead, if any.
    pub(crate) fn take_prefetch(&mut self, session_id: &str) -> Option<Prefetch> {
        self.prefetched.remove(session_id)
    }

    /// The current epoch: read it before requesting a load, and pass it to
    /// [`SessionCache::load`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn forgot(&mut self, session_id: &str, cap: usize) {
        // A load asked for ahead would be refused now (see `load`).
        self.prefetched.remove(session_id);
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

    type Answerer = oneshot::Sender<Result<Vec<(String, i64)>, TracingError>>;

    fn ahead(cache: &SessionCache) -> (Prefetch, Answerer) {
        let (tx, answer) = oneshot::channel();
        (
            Prefetch {
                since: cache.epoch(),
                answer,
            },
            tx,
        )
    }

    #[test]
    fn a_load_is_asked_for_ahead_only_when_it_could_be_installed() {
        let mut cache = SessionCache::default();
        assert!(cache.wants_prefetch("new", 0));
        let (p, _tx) = ahead(&cache);
        cache.prefetching("new", p, 8);
        assert!(!cache.wants_prefetch("new", 0), "already asked for");
        // A cached session needs no load.
        let since = cache.epoch();
        assert!(cache.load("cached", vec![], 8, 0, 0, since));
        assert!(!cache.wants_prefetch("cached", 0));
        // A session whose queued operations are not done yet loads in FIFO
        // order, not ahead.
        cache.invalidate("failed", 3, 8);
        assert!(!cache.wants_prefetch("failed", 2));
        assert!(cache.wants_prefetch("failed", 3));
        // Taken once.
        assert!(cache.take_prefetch("new").is_some());
        assert!(cache.take_prefetch("new").is_none());
    }

    #[test]
    fn a_forgotten_session_drops_its_load_asked_for_ahead() {
        let mut cache = SessionCache::default();
        let (p, _tx) = ahead(&cache);
        cache.prefetching("s", p, 8);
        cache.forget("s", 8);
        assert!(cache.take_prefetch("s").is_none());
        // And one taken before a forgetting is refused when installed.
        cache.deleted("s");
        let (p, _tx) = ahead(&cache);
        cache.prefetching("s", p, 8);
        let taken = cache.take_prefetch("s").expect("asked for");
        cache.invalidate("s", 0, 8);
        assert!(!cache.load("s", vec![], 8, 0, 0, taken.since));
    }

    #[test]
    fn loads_asked_for_ahead_are_bounded_oldest_first() {
        let mut cache = SessionCache::default();
        let mut senders = Vec::new();
        for n in 0..10 {
            let (p, tx) = ahead(&cache);
            senders.push(tx);
            cache.prefetching(&format!("s{n}"), p, 4);
            if n % 3 == 0 {
                // Some are taken as they would be by a first step.
                assert!(cache.take_prefetch(&format!("s{n}")).is_some());
            }
        }
        assert!(cache.prefetched.len() <= 4);
        assert!(cache.prefetch_order.len() <= 8);
        assert!(cache.take_prefetch("s8").is_some(), "the newest is kept");
        assert!(
            cache.take_prefetch("s1").is_none(),
            "the oldest was dropped"
        );
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
