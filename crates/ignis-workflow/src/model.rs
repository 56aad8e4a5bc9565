//! Placeholder: owned by the model work; filled in concurrently.
