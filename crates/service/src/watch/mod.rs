//! etcd's Watch, served by every member from its own applied state: the
//! sans-IO watch stream (`stream.rs`) and the task that runs one per client
//! stream (`session.rs`), fed by the event stream (`events.rs`) and by
//! history reads through the apply thread.

pub mod session;
pub mod stream;

pub use session::{run, WatchLimits};
pub use stream::{WatchCommand, WatchCreate, WatchReply, WatchStream, STREAM_PROGRESS_ID};
