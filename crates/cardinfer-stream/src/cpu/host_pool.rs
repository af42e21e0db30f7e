//! The CPU's thread pool for host-layer work: the matrix products and attention of layers
//! computed on the CPU, whose thread count can change between jobs.
//!
//! Candle's barrier pool (which these products used before) spins its workers briefly
//! between jobs, so a layer's products do not each wait for threads to wake; but it is
//! sized once per process. On the H100 machine's loans the best count for hybrid decode
//! changes from loan to loan — 10 or 12 of 16 threads ran a 4B at 33.4–33.6 tok/s where
//! 14 ran it at 29.5–31.4 on one loan, 14 was the fastest on the next (BENCHMARKS.md,
//! run78/run79) — so the executor measures counts while it decodes
//! ([`cardinfer_plan::HostSplitTuner`]) and sets the one in use with [`set_threads`].
//!
//! Workers past the count in use get no jobs: after spinning for [`SPIN`] they park, and
//! stay parked, leaving their cores to the thread that drives the device and to the
//! copies' driver work. A job is run by the calling thread and `threads - 1` workers,
//! each taking items from a shared cursor, and it ends when every item is done, so a
//! worker the OS delays holds up only the items it took: one that had not started yet
//! finds the job over when it runs again. Threads that wait (for a job, for its items)
//! offer their core to the OS now and then, so a worker holding items gets one sooner.
//! With a neighbour copying memory on 6 of 16 cores, a 4B host split took 239 ms per token
//! when every job waited for every worker, 68 ms with jobs ending on their items, and 49
//! ms with the yielding too, against 31–33 ms without the neighbour (BENCHMARKS.md, run92
//! and run94).

use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins for its next job before parking: longer than the gap
/// between two host layers of a decode step (a hop and a device layer, 0.1–0.3 ms on the
/// H100 machine), so a pass's layers never wait for workers to wake.
pub const SPIN: Duration = Duration::from_millis(1);

/// Spins between which a waiting thread offers its core to the OS
/// ([`std::thread::yield_now`]): with more runnable threads than cores, a worker that
/// holds a job's items may be the one waiting for a core.
const YIELD_EVERY: u32 = 64;

/// Spins until `done` is true, offering the core to the OS every [`YIELD_EVERY`] spins.
fn spin_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        match spins.is_multiple_of(YIELD_EVERY) {
            true => std::thread::yield_now(),
            false => std::hint::spin_loop(),
        }
    }
}

/// A job's work for one thread: called with the thread's index.
type Work<'a> = &'a (dyn Fn(usize) + Sync);

/// One worker's slot: the job generation it was last asked to run, and its thread.
struct Worker {
    go: AtomicU64,
    thread: OnceLock<std::thread::Thread>,
}

/// What the callers and the workers share.
struct Shared {
    workers: Vec<Worker>,
    /// The job being run; written only while no worker can read it (see [`Pool::run`]).
    job: UnsafeCell<Option<Work<'static>>>,
    /// Workers between announcing themselves for a job and leaving it.
    inside: AtomicUsize,
    /// The generation of the last job whose items were all done: a worker that wakes for
    /// it (or an older one) leaves it alone.
    retired: AtomicU64,
    /// A worker's panic, handed to the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    stop: AtomicBool,
    /// Tests: worker 0 takes this lock before it joins a job (a worker the OS delays).
    #[cfg(test)]
    hold_worker_0: Mutex<()>,
}

// SAFETY: `job` is written by the one caller holding `Pool::call`, either before it
// publishes the job's generation (no worker joined it yet; the last job was retired and
// `inside` was 0) or after retiring it and seeing `inside` at 0. A worker reads `job` only
// after its `go` (Acquire, after the write's Release), having announced itself in
// `inside` and found the job not retired (both SeqCst, as the caller's retiring and
// reading of `inside`), until it leaves `inside`. Everything else is atomic or locked.
unsafe impl Sync for Shared {}

thread_local! {
    /// Whether this thread runs a part of a job (a job started from there runs inline
    /// instead of waiting for the pool it is part of).
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// A pool of up to `workers + 1` threads (the caller takes part) with an adjustable count.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Serializes callers; holds the generation of the last job.
    call: Mutex<u64>,
    threads: AtomicUsize,
    /// The count the pool was made with.
    default_threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} of {} threads)", self.threads(), self.max_threads())
    }
}

impl Pool {
    /// A pool of at most `max_threads` threads (the caller and `max_threads - 1` workers),
    /// `threads` of them in use. Workers that cannot be started leave the pool smaller.
    pub fn new(max_threads: usize, threads: usize) -> Self {
        let count = max_threads.max(1) - 1;
        let shared = Arc::new(Shared {
            workers: (0..count).map(|_| Worker { go: AtomicU64::new(0), thread: OnceLock::new() }).collect(),
            job: UnsafeCell::new(None),
            inside: AtomicUsize::new(0),
            retired: AtomicU64::new(0),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
            #[cfg(test)]
            hold_worker_0: Mutex::new(()),
        });
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let worker_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cardinfer-cpu-{index}"))
                .spawn(move || work_loop(&worker_shared, index));
            match spawned {
                Ok(handle) => {
                    let _ = shared.workers[index].thread.set(handle.thread().clone());
                    handles.push(handle);
                }
                Err(_) => break,
            }
        }
        let mut pool = Self { shared, handles, call: Mutex::new(0), threads: AtomicUsize::new(1), default_threads: 1 };
        pool.set_threads(threads);
        pool.default_threads = pool.threads();
        pool
    }

    /// The thread count the pool was made with (what a new search starts from, whatever
    /// an earlier one set).
    pub fn default_threads(&self) -> usize {
        self.default_threads
    }

    /// Most threads a job can use.
    pub fn max_threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Threads the next jobs use.
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// Uses `threads` threads (at least 1, at most [`Pool::max_threads`]) from the next job on.
    pub fn set_threads(&self, threads: usize) {
        self.threads.store(threads.clamp(1, self.max_threads()), Ordering::Relaxed);
    }

    /// Calls `f` on every index of `0..items`, each once, in ranges taken from a shared
    /// cursor by the threads in use (about eight ranges per thread).
    pub fn for_each_range(&self, items: usize, f: impl Fn(Range<usize>) + Sync) {
        if items == 0 {
            return;
        }
        let threads = self.threads();
        if threads == 1 || IN_POOL.with(Cell::get) {
            return f(0..items);
        }
        let chunk = items.div_ceil(threads * 8).max(1);
        let (cursor, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
        /// Counts a range as done when dropped: after `f` returned, or while a panic in it
        /// unwinds (the caller re-raises the panic once the other ranges are done).
        struct Done<'a>(&'a AtomicUsize, usize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(self.1, Ordering::Release);
            }
        }
        let work = |_: usize| loop {
            let start = cursor.fetch_add(chunk, Ordering::Relaxed);
            if start >= items {
                break;
            }
            let end = items.min(start + chunk);
            let _done = Done(&done, end - start);
            f(start..end);
        };
        self.run(threads, &work, &|| done.load(Ordering::Acquire) >= items);
    }

    /// Runs `work` on `threads` threads: workers `0..threads - 1` and the caller (index
    /// `threads - 1`); returns once `finished` says so and no worker is still inside the
    /// job, re-raising a worker's panic. Workers that had not joined by then never do.
    fn run(&self, threads: usize, work: Work<'_>, finished: &dyn Fn() -> bool) {
        let mut generation = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let workers = (threads - 1).min(self.handles.len());
        *generation += 1;
        // SAFETY: no worker reads `job` now: the last job was retired and `inside` seen at
        // 0 (and we hold `call`), and none has seen this generation yet. The lifetime is
        // erased only until `Wait` below has retired the job and seen `inside` at 0, even
        // if `work` panics here.
        unsafe {
            *self.shared.job.get() = Some(std::mem::transmute::<Work<'_>, Work<'static>>(work));
        }
        for worker in &self.shared.workers[..workers] {
            worker.go.store(*generation, Ordering::Release);
            if let Some(thread) = worker.thread.get() {
                thread.unpark();
            }
        }
        /// When dropped (also while unwinding from the caller's part): waits until the
        /// job's work is finished, retires it, and waits for the workers inside it to leave.
        struct Wait<'a> {
            shared: &'a Shared,
            generation: u64,
            finished: &'a dyn Fn() -> bool,
        }
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                spin_until(|| (self.finished)());
                self.shared.retired.store(self.generation, Ordering::SeqCst);
                spin_until(|| self.shared.inside.load(Ordering::SeqCst) == 0);
                // SAFETY: no worker is inside the job, and none can enter it (retired).
                unsafe { *self.shared.job.get() = None };
            }
        }
        /// Marks the caller as in the pool while it runs its part (a job it starts from
        /// there runs inline: `call` is held), and restores the mark when dropped.
        struct Part(bool);
        impl Drop for Part {
            fn drop(&mut self) {
                IN_POOL.with(|flag| flag.set(self.0));
            }
        }
        let wait = Wait { shared: &self.shared, generation: *generation, finished };
        let part = Part(IN_POOL.with(|flag| flag.replace(true)));
        work(workers);
        drop(part);
        drop(wait);
        let panic = self.shared.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(generation);
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

/// A worker: waits for its generation to change (spinning for [`SPIN`], then parked), runs
/// the job, and signals it done.
fn work_loop(shared: &Shared, index: usize) {
    IN_POOL.with(|flag| flag.set(true));
    let me = &shared.workers[index];
    let mut seen = 0u64;
    loop {
        let mut idle_since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let go = me.go.load(Ordering::Acquire);
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if go != seen {
                seen = go;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(YIELD_EVERY) {
                std::hint::spin_loop();
                continue;
            }
            std::thread::yield_now();
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SPIN {
                // A pending unpark makes this return at once; the loop checks again.
                std::thread::park();
                idle_since = None;
            }
        }
        #[cfg(test)]
        if index == 0 {
            drop(shared.hold_worker_0.lock().unwrap_or_else(|e| e.into_inner()));
        }
        shared.inside.fetch_add(1, Ordering::SeqCst);
        if shared.retired.load(Ordering::SeqCst) < seen {
            // SAFETY: the caller wrote the job before our `go` (Release/Acquire), and it
            // keeps it until it has retired the job and seen `inside` at 0 (we are in it,
            // and it was not retired when we entered).
            let job = unsafe { *shared.job.get() };
            if let Some(job) = job {
                if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index))) {
                    shared.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
                }
            }
        }
        shared.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for worker in &self.shared.workers {
            if let Some(thread) = worker.thread.get() {
                thread.unpark();
            }
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The process's pool: as many threads as the machine has cores, the count Candle's CPU
/// ops use (`RAYON_NUM_THREADS`, `CANDLE_NUM_THREADS`, else the physical cores) in use.
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = candle_core::utils::get_num_threads();
        Pool::new(cores.max(threads), threads)
    })
}

/// Sets the threads the process's pool uses from its next job on (see [`Pool::set_threads`]).
pub fn set_threads(threads: usize) {
    global().set_threads(threads);
}

/// Threads the process's pool uses.
pub fn threads() -> usize {
    global().threads()
}

/// The thread count the process's pool was made with (see [`Pool::default_threads`]).
pub fn default_threads() -> usize {
    global().default_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item is visited exactly once, whatever the thread count, and the count in use
    /// bounds the threads that take part.
    #[test]
    fn every_item_once_on_the_threads_in_use() {
        let pool = Pool::new(4, 4);
        for threads in [1, 2, 3, 4, 9] {
            pool.set_threads(threads);
            for items in [0, 1, 7, 100, 1000] {
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                let names = Mutex::new(std::collections::HashSet::new());
                pool.for_each_range(items, |range| {
                    names.lock().unwrap().insert(std::thread::current().id());
                    for i in range {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads, {items} items");
                let used = names.lock().unwrap().len();
                assert!(used <= threads.min(4), "{used} threads ran a job for {threads}");
            }
        }
        assert_eq!(pool.threads(), 4, "clamped to the pool's size");
        assert_eq!(pool.default_threads(), 4, "the count it was made with");
    }

    /// A panic in a job reaches the caller, and the pool still works afterwards.
    #[test]
    fn a_panic_reaches_the_caller() {
        let pool = Pool::new(3, 3);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.for_each_range(64, |range| {
                if range.contains(&40) {
                    panic!("item 40");
                }
            })
        }));
        assert!(result.is_err());
        let sum = AtomicUsize::new(0);
        pool.for_each_range(10, |range| {
            sum.fetch_add(range.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    /// A worker that has not joined a job does not hold it up: the others and the caller
    /// do every item, and the late worker leaves the retired job alone.
    #[test]
    fn a_delayed_worker_holds_up_nothing_it_did_not_take() {
        let pool = Arc::new(Pool::new(3, 3));
        let held = pool.shared.hold_worker_0.lock().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let job = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let ran_on_worker_0 = AtomicUsize::new(0);
                let sum = AtomicUsize::new(0);
                for _ in 0..20 {
                    pool.for_each_range(100, |range| {
                        if std::thread::current().name() == Some("cardinfer-cpu-0") {
                            ran_on_worker_0.fetch_add(1, Ordering::Relaxed);
                        }
                        sum.fetch_add(range.sum::<usize>(), Ordering::Relaxed);
                    });
                }
                let _ = sender.send((sum.load(Ordering::Relaxed), ran_on_worker_0.load(Ordering::Relaxed)));
            })
        };
        // Not a timing bound: a deadlock guard (before, the caller waited for every worker).
        let result = receiver.recv_timeout(Duration::from_secs(120));
        drop(held);
        let (sum, on_worker_0) = result.expect("the jobs waited for the held worker");
        assert_eq!((sum, on_worker_0), (20 * 4950, 0));
        job.join().unwrap();
        // Once let go, the worker takes part again.
        let sum = AtomicUsize::new(0);
        pool.for_each_range(1000, |range| {
            sum.fetch_add(range.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 499500);
    }

    /// Jobs from several threads at once are run one after the other, each completely;
    /// a job started from inside a job runs inline.
    #[test]
    fn concurrent_and_nested_jobs() {
        let pool = Arc::new(Pool::new(4, 4));
        let total = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let (pool, total) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        pool.for_each_range(16, |range| {
                            pool.for_each_range(range.len(), |inner| {
                                total.fetch_add(inner.len(), Ordering::Relaxed);
                            });
                        });
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 3 * 50 * 16);
    }
}
