//! The loader both stages use: N worker threads compute items (batches) and hand them to one
//! consumer in item order, whatever order the workers finish in, with back-pressure.
//!
//! Item `i` goes to worker `i mod N`, which sends it through its own bounded channel; the
//! consumer reads the channels round-robin. So results arrive in order without a reorder buffer,
//! and no worker runs more than `capacity + 1` items ahead of the consumer.

use crossbeam_channel::{Receiver, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Items `0..n` computed on worker threads, yielded in order.
pub struct Loader<T: Send + 'static> {
    channels: Vec<Receiver<T>>,
    next: usize,
    n: usize,
    handles: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Loader<T> {
    /// Starts `threads` workers computing `work(i)` for `i` in `0..n`; each may hold `capacity`
    /// finished items the consumer has not taken yet.
    pub fn new(
        n: usize,
        threads: usize,
        capacity: usize,
        work: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Self {
        let threads = threads.clamp(1, n.max(1));
        let work = Arc::new(work);
        let mut channels = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for w in 0..threads {
            let (tx, rx) = bounded(capacity);
            let work = Arc::clone(&work);
            let h = std::thread::Builder::new()
                .name(format!("loader-{w}"))
                .spawn(move || {
                    for i in (w..n).step_by(threads) {
                        // A closed channel means the consumer is gone: stop.
                        if tx.send(work(i)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn loader thread");
            channels.push(rx);
            handles.push(h);
        }
        Loader {
            channels,
            next: 0,
            n,
            handles,
        }
    }

    /// Number of items still to come.
    pub fn remaining(&self) -> usize {
        self.n - self.next
    }
}

impl<T: Send + 'static> Iterator for Loader<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next >= self.n {
            return None;
        }
        let w = self.next % self.channels.len();
        let item = self.channels[w].recv().expect("a loader worker panicked");
        self.next += 1;
        Some(item)
    }
}

impl<T: Send + 'static> Drop for Loader<T> {
    fn drop(&mut self) {
        // Dropping the receivers makes blocked workers' sends fail, so they exit.
        self.channels.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn in_order_whatever_the_timing() {
        let items: Vec<usize> = Loader::new(200, 4, 2, |i| {
            // Later items are often faster than earlier ones.
            std::thread::sleep(Duration::from_micros(((i * 7919) % 13) as u64 * 50));
            i * i
        })
        .collect();
        assert_eq!(items, (0..200).map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn back_pressure_bounds_work_ahead() {
        let started = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&started);
        let mut l = Loader::new(1000, 3, 2, move |i| {
            s.fetch_add(1, Ordering::SeqCst);
            i
        });
        for taken in 1..=50 {
            assert_eq!(l.next(), Some(taken - 1));
            std::thread::sleep(Duration::from_millis(1));
            // Each of 3 workers holds at most 2 queued plus 1 blocked in send.
            assert!(started.load(Ordering::SeqCst) <= taken + 3 * 3, "ran ahead");
        }
        drop(l); // workers blocked in send must exit
        assert!(started.load(Ordering::SeqCst) < 1000);
    }

    #[test]
    fn empty_and_single_thread() {
        assert_eq!(Loader::new(0, 4, 1, |i| i).count(), 0);
        assert_eq!(
            Loader::new(3, 1, 0, |i| i).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}
