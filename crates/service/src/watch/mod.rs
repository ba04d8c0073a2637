//! etcd's Watch, served by every member from its own applied state: the
//! sans-IO watch stream (`ferrite_state::watch`, which the simulator runs
//! too) and the task that runs one per client stream (`session.rs`), fed by
//! the event stream (`events.rs`) and by history reads through the apply
//! thread.

pub mod session;

pub use ferrite_state::watch::{
    WatchCommand, WatchCreate, WatchReply, WatchStream, STREAM_PROGRESS_ID,
};
pub use session::{run, WatchLimits};
