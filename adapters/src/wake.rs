//! Wakes a task gives itself while it is being polled, answered by polling again at once.
//!
//! hyper runs an HTTP/1.1 connection as one state machine whose halves talk through channels:
//! the server hands the request body to the handler and the client hands a request to its
//! connection and the response back, and every hand-over wakes the other half. When both halves
//! are polled by the same task (a server connection and the call it runs; a client connection
//! driven by that call), the task wakes itself while it is being polled. tokio then reschedules
//! it as a yield, and announces the yield to a parked worker thread: a futex wake and a context
//! switch on another core, for a task that is about to run again on this one anyway. On a
//! 2-core machine shared with the client and the upstream, that is several microseconds of
//! kernel time and a disturbed neighbour per hand-over.
//!
//! [`LocalWakes`] is the waker such a task's halves are polled with instead. While they are
//! being polled a wake is only noted, and the poll runs them again before it returns; any other
//! wake (the socket's readiness, from the I/O driver; a timer; another task) goes to the task's
//! own waker as before. [`Absorbing`] wraps a whole future in it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;
/// Rounds of polling again in one poll before the thread is given up (a yield) instead: a
/// future that keeps waking itself still lets the other tasks run.
const ROUNDS: usize = 16;

/// A waker that, while [`LocalWakes::poll`] runs, turns wakes into another round of that poll.
/// No wake is lost: the poll returns `Pending` only after a round in which nothing woke it, and
/// a wake outside the poll reaches the task that polled last.
pub struct LocalWakes {
    state: AtomicU8,
    task: AtomicWaker,
}

impl LocalWakes {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { state: AtomicU8::new(IDLE), task: AtomicWaker::new() })
    }

    /// Marks a poll as begun, early: for a hand-over made just before it (a request queued for
    /// a connection the next poll drives), which that poll's first round answers anyway.
    pub fn hold(&self) {
        self.state.store(POLLING, Ordering::Release);
    }

    /// Runs `round` with `waker` (built from this) until it is ready, or until a round passes
    /// in which nothing woke `waker`.
    pub fn poll<T>(&self, cx: &mut Context<'_>, waker: &Waker, mut round: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        self.task.register(cx.waker());
        let mut inner = Context::from_waker(waker);
        for _ in 0..ROUNDS {
            self.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(v) = round(&mut inner) {
                // A wake noted in this last round is for something that is polled again only
                // when the caller polls next: pass it on.
                if self.state.swap(IDLE, Ordering::AcqRel) == WOKEN {
                    cx.waker().wake_by_ref();
                }
                return Poll::Ready(v);
            }
            if self.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
        }
        // Still woken after every round: give the thread up and come back.
        self.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for LocalWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        loop {
            match self.state.load(Ordering::Acquire) {
                IDLE => return self.task.wake(),
                POLLING => {
                    if self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

/// A future polled under its own [`LocalWakes`]: what it wakes in itself while it runs is run
/// again in the same poll instead of rescheduling the task.
pub struct Absorbing<F> {
    fut: Pin<Box<F>>,
    wakes: Arc<LocalWakes>,
    waker: Waker,
}

impl<F: Future> Absorbing<F> {
    pub fn new(fut: F) -> Self {
        let wakes = LocalWakes::new();
        let waker = Waker::from(wakes.clone());
        Self { fut: Box::pin(fut), wakes, waker }
    }
}

impl<F: Future> Future for Absorbing<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let fut = &mut this.fut;
        this.wakes.poll(cx, &this.waker, |inner| fut.as_mut().poll(inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes that reach the task.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_wake_during_the_poll_is_a_new_round_not_a_task_wake() {
        let (count, task) = counting();
        let mut polls = 0;
        // Wakes itself on its first two polls, as a hand-over between two halves does.
        let mut fut = Absorbing::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(polls)
        }));
        let got = Pin::new(&mut fut).poll(&mut Context::from_waker(&task));
        assert_eq!(got, Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "no wake reached the task");
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (count, task) = counting();
        let stash: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let keep = stash.clone();
        let mut fut = Absorbing::new(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(Pin::new(&mut fut).poll(&mut Context::from_waker(&task)).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // As the I/O driver would, later, from wherever.
        let w = stash.lock().unwrap().take().unwrap();
        std::thread::spawn(move || w.wake()).join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the wake reached the task");
    }

    #[test]
    fn a_future_that_always_wakes_itself_yields_after_the_rounds() {
        let (count, task) = counting();
        let polls = Arc::new(AtomicUsize::new(0));
        let seen = polls.clone();
        let mut fut = Absorbing::new(std::future::poll_fn(move |cx| {
            seen.fetch_add(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert!(Pin::new(&mut fut).poll(&mut Context::from_waker(&task)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), ROUNDS);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "it yields: the task is woken to come back");
    }

    #[test]
    fn a_wake_in_the_round_that_finishes_is_passed_on() {
        let (count, task) = counting();
        let mut fut = Absorbing::new(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        }));
        assert!(Pin::new(&mut fut).poll(&mut Context::from_waker(&task)).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    /// A wake from another thread that races the poll (between a round and the poll's return)
    /// is never lost: either a further round sees it or the task is woken. A lost one hangs
    /// the call, here caught by the timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_racing_the_poll_from_another_thread_are_not_lost() {
        use std::sync::atomic::AtomicBool;
        for _ in 0..2000 {
            let ready = Arc::new(AtomicBool::new(false));
            let stash: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
            let (r, keep) = (ready.clone(), stash.clone());
            let fut = Absorbing::new(std::future::poll_fn(move |cx| {
                *keep.lock().unwrap() = Some(cx.waker().clone());
                if r.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
            }));
            let waker_thread = std::thread::spawn(move || {
                let w = loop {
                    if let Some(w) = stash.lock().unwrap().clone() {
                        break w;
                    }
                    std::hint::spin_loop();
                };
                ready.store(true, Ordering::SeqCst);
                w.wake();
            });
            tokio::time::timeout(std::time::Duration::from_secs(5), fut).await.expect("a wake was lost");
            waker_thread.join().unwrap();
        }
    }
}
