//! Bad input never panics: arbitrary text, YAML-ish text and mutations of real workflows
//! go through `parse` and `parse_action`, and every error they return is located.
// Integration tests are their own crate: there is no `#[cfg(test)]` module to put them in.
#![allow(clippy::tests_outside_test_module)]

use ignis_workflow::{Diagnostics, parse, parse_action};
use proptest::prelude::*;

const SEED: &str = "name: CI\non:\n  push:\n    branches: [main]\n  workflow_dispatch:\n    inputs:\n      x:\n        type: choice\n        options: [a, b]\njobs:\n  build:\n    runs-on: ${{ matrix.os }}\n    needs: [lint]\n    if: ${{ success() }}\n    strategy:\n      matrix:\n        os: [a, b]\n        include:\n          - os: c\n    steps:\n      - id: s\n        run: |\n          echo ${{ github.sha }}\n      - uses: ./x\n        with: {a: 1}\n  lint:\n    runs-on: x\n    steps: [{run: echo}]\n";

fn check(result: Result<impl std::fmt::Debug, Diagnostics>, src: &str) {
    if let Err(d) = result {
        assert!(!d.is_empty());
        let lines = src.lines().count() + 2;
        for diag in &d {
            assert!(
                diag.line >= 1 && diag.line <= lines,
                "{diag} (of {lines} lines)"
            );
            assert!(diag.column >= 1, "{diag}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        check(parse("f.yml", &src), &src);
        check(parse_action("action.yml", &src), &src);
    }

    #[test]
    fn yaml_like_text_never_panics(src in "([ a-z:\\-\\[\\]{},'\"|>&*!#$\\{\\}\\n]|on|jobs|steps|run|uses|needs|matrix|\\$\\{\\{){0,120}") {
        check(parse("f.yml", &src), &src);
        check(parse_action("action.yml", &src), &src);
    }

    #[test]
    fn mutated_workflows_never_panic(pos in 0usize..SEED.len(), cut in 0usize..40, insert in "[ :\\-\\[\\]{}'\"|\\n$a-z]{0,6}") {
        let mut src = String::new();
        let pos = (0..=pos).rev().find(|p| SEED.is_char_boundary(*p)).unwrap_or(0);
        let end = (pos + cut).min(SEED.len());
        let end = (end..=SEED.len()).find(|p| SEED.is_char_boundary(*p)).unwrap_or(SEED.len());
        src.push_str(&SEED[..pos]);
        src.push_str(&insert);
        src.push_str(&SEED[end..]);
        check(parse("f.yml", &src), &src);
    }
}

#[test]
fn the_seed_is_valid() {
    parse("f.yml", SEED).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let src = format!("on: push\njobs: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    assert!(parse("f.yml", &src).is_err());
    let src = format!("on: push\njobs:\n  a:\n    env: {}\n", "{a: ".repeat(3000));
    assert!(parse("f.yml", &src).is_err());
}
