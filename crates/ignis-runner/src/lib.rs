//! `ignis-runner` owns sessions (one VM per run, released on every path), executes
//! planned workflows in them and emits the run event stream.
