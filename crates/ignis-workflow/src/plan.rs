//! Placeholder: owned by the plan work; filled in concurrently.
