//! Feeds arbitrary text to the workflow and action parsers (YAML, model conversion and
//! validation). Errors are expected; panics, hangs and runaway allocations are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ignis_workflow::parse("fuzz.yml", text);
    let _ = ignis_workflow::parse_action("action.yml", text);
});
