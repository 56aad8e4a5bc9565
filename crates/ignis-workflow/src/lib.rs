//! `ignis-workflow` turns GitHub Actions workflow files into a typed, validated model,
//! evaluates `${{ }}` expressions and plans runs (trigger matching, job DAG, matrices).
//!
//! It is pure: no I/O, no async, no processes. Anything that needs the outside world
//! (reading files for `hashFiles`, running steps) is supplied by the caller.
