//! One current-thread tokio runtime per thread, reused across inputs: a
//! runtime per input would cost more than most inputs.

use std::future::Future;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Runs `future` to completion on this thread's runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}
