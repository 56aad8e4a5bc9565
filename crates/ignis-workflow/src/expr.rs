//! Placeholder: owned by the expr work; filled in concurrently.
