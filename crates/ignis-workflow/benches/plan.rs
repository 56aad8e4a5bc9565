//! Placeholder replaced by the planner benchmark (parse + validate + plan of every conformance workflow).

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(_c: &mut Criterion) {}

criterion_group!(benches, bench);
criterion_main!(benches);
