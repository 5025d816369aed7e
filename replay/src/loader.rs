//! The loader both stages use: N worker threads compute items (batches) and hand them to one
//! consumer in item order, whatever order the workers finish in, with back-pressure.
//!
//! Item `i` goes to worker `i mod N`, which sends it through its own channel; the consumer
//! reads the channels round-robin. So results arrive in order without a reorder buffer. A gate
//! bounds the work in flight whatever the thread count: a worker starts item `i` only once
//! `i < taken + ahead` (`taken` = items the consumer has had), so at most `ahead` items are
//! being built or waiting, and the next item the consumer needs can always start.

use crossbeam_channel::{Receiver, bounded};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Items `0..n` computed on worker threads, yielded in order.
pub struct Loader<T: Send + 'static> {
    channels: Vec<Receiver<T>>,
    next: usize,
    n: usize,
    gate: Arc<Gate>,
    handles: Vec<JoinHandle<()>>,
}

/// How far the workers may run ahead of the consumer.
struct Gate {
    /// (items taken by the consumer, consumer gone).
    state: Mutex<(usize, bool)>,
    moved: Condvar,
}

impl<T: Send + 'static> Loader<T> {
    /// Starts `threads` workers computing `work(i)` for `i` in `0..n`, at most `ahead` (≥ 1)
    /// items started and not yet taken at any time: the memory bound, as `ahead` items. With
    /// `ahead` below `threads`, only that many workers are busy at once.
    pub fn new(
        n: usize,
        threads: usize,
        ahead: usize,
        work: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Self {
        let threads = threads.clamp(1, n.max(1));
        let ahead = ahead.max(1);
        let work = Arc::new(work);
        let gate = Arc::new(Gate {
            state: Mutex::new((0, false)),
            moved: Condvar::new(),
        });
        let mut channels = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for w in 0..threads {
            let (tx, rx) = bounded(ahead);
            let (work, gate) = (Arc::clone(&work), Arc::clone(&gate));
            let h = std::thread::Builder::new()
                .name(format!("loader-{w}"))
                .spawn(move || {
                    for i in (w..n).step_by(threads) {
                        {
                            let mut s = gate.state.lock().expect("loader gate");
                            while i >= s.0 + ahead && !s.1 {
                                s = gate.moved.wait(s).expect("loader gate");
                            }
                            if s.1 {
                                return;
                            }
                        }
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
            gate,
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
        self.gate.state.lock().expect("loader gate").0 = self.next;
        self.gate.moved.notify_all();
        Some(item)
    }
}

impl<T: Send + 'static> Drop for Loader<T> {
    fn drop(&mut self) {
        // Workers waiting at the gate see the consumer gone; those blocked in send see their
        // channel closed.
        self.gate.state.lock().expect("loader gate").1 = true;
        self.gate.moved.notify_all();
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
            // At most 2 items beyond those taken, whatever the 3 workers do.
            assert!(started.load(Ordering::SeqCst) <= taken + 2, "ran ahead");
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
        // Fewer items ahead than workers: still every item, in order.
        assert_eq!(
            Loader::new(50, 8, 1, |i| i).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
    }
}
