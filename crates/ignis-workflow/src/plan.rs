//! Planning: does a workflow trigger for an event, which jobs run in which order, and which
//! matrix legs each job has. Pure: the runtime supplies event payloads and job results.

pub mod dag;
pub mod evaluate;
pub mod filter;
pub mod matrix;
pub mod trigger;
