//! Placeholder: owned by the parse work; filled in concurrently.
