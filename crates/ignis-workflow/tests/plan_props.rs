//! Property tests: the planner's pieces never panic on arbitrary input, and what they return
//! keeps their documented invariants.

// An integration test file is a test module of its own; the workspace lint targets unit tests.
#![allow(clippy::tests_outside_test_module)]

use ignis_workflow::plan::dag::Dag;
use ignis_workflow::plan::filter::{FilterList, FilterPattern};
use ignis_workflow::plan::matrix::{MAX_LEGS, expand_matrix};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..5).prop_map(|n| json!(n)),
        "[abc]{0,2}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[ab]", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Matrices mostly of the right shape (vectors of scalars, include/exclude of mappings over
/// the same few keys) with arbitrary values mixed in.
fn matrix() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("os"),
        Just("node"),
        Just("arch"),
        Just("include"),
        Just("exclude")
    ];
    let entry = prop::collection::vec(
        (prop_oneof![Just("os"), Just("node"), Just("x")], scalar()),
        0..3,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let field = prop_oneof![
        4 => prop::collection::vec(scalar(), 0..5).prop_map(Value::Array),
        2 => prop::collection::vec(entry, 0..4).prop_map(Value::Array),
        1 => value(),
    ];
    prop::collection::vec((key, field), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn filter_patterns_never_panic(pattern in "[a-z*?+\\[\\]!\\\\/.-]{0,12}", name in "[a-z/.+-]{0,12}") {
        if let Ok(p) = FilterPattern::new(&pattern) {
            let _ = p.matches(&name);
        }
        if let Ok(list) = FilterList::new(&[pattern.as_str(), "!a*"]) {
            let _ = list.includes_any(&[name.as_str()]);
            let _ = list.ignores_all(&[name.as_str()]);
        }
    }

    #[test]
    fn literal_patterns_match_only_themselves(name in "[a-z0-9/._-]{1,16}", other in "[a-z0-9/._-]{1,16}") {
        // Escaping every character makes the pattern literal.
        let escaped: String = name.chars().flat_map(|c| ['\\', c]).collect();
        let p = FilterPattern::new(&escaped).expect("escaped pattern is valid");
        prop_assert!(p.matches(&name));
        prop_assert_eq!(p.matches(&other), name == other);
    }

    #[test]
    fn matrix_expansion_never_panics_and_respects_limits(m in matrix()) {
        if let Ok(legs) = expand_matrix(&m) {
            prop_assert!(!legs.is_empty());
            prop_assert!(legs.len() <= MAX_LEGS);
        }
    }

    #[test]
    fn matrix_without_include_or_exclude_is_the_full_product(
        a in prop::collection::vec(0i64..100, 1..6),
        b in prop::collection::vec("[a-z]{1,3}", 1..6),
    ) {
        let legs = expand_matrix(&json!({"a": a, "b": b})).expect("valid");
        prop_assert_eq!(legs.len(), a.len() * b.len());
        // First key slowest, keys in declaration order.
        prop_assert_eq!(&legs[0]["a"], &json!(a[0]));
        prop_assert_eq!(&legs[b.len() - 1]["b"], &json!(b[b.len() - 1]));
        prop_assert!(legs.iter().all(|l| l.keys().map(String::as_str).eq(["a", "b"])));
    }

    #[test]
    fn dag_never_panics_and_orders_needs_first(needs in prop::collection::vec(prop::collection::vec(0usize..8, 0..3), 1..8)) {
        let jobs: Vec<(String, Vec<String>)> = needs
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("j{i}"), n.iter().map(|k| format!("j{k}")).collect()))
            .collect();
        if let Ok(dag) = Dag::new(jobs) {
            let order = dag.topological_order();
            prop_assert_eq!(order.len(), dag.len());
            let pos = |j: usize| order.iter().position(|&o| o == j);
            for j in 0..dag.len() {
                for &n in dag.needs(j) {
                    prop_assert!(pos(n) < pos(j));
                }
            }
            let stage = dag.stage_of();
            for j in 0..dag.len() {
                for &n in dag.needs(j) {
                    prop_assert!(stage[n] < stage[j]);
                }
            }
            // Scheduling hands out every job exactly once.
            let mut state = dag.state();
            let mut queue = state.take_ready();
            let mut seen = Vec::new();
            while let Some(j) = queue.pop() {
                seen.push(j);
                queue.extend(state.complete(j));
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..dag.len()).collect::<Vec<_>>());
            prop_assert!(state.all_finished());
        }
    }
}
