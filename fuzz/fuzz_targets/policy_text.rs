//! Policy-set text from outside (`ValidatePolicySet`, `ActivatePolicySet`, a replayed log): the
//! shape limits, Cedar's parser and the schema validator never panic and never overflow the
//! stack. Each input runs on a thread with a 2 MiB stack, the stack of a tokio worker, where the
//! server runs the same code.
#![no_main]

/// Tokio's default thread stack.
const STACK: usize = 2 * 1024 * 1024;

libfuzzer_sys::fuzz_target!(|data: &str| {
    let text = data.to_owned();
    let validated = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let valid = policy::policy_set::validate(&text).is_ok();
            // Whatever validates also compiles, to the same verdict.
            assert_eq!(policy::engine::PolicyEngine::new(&text).is_ok(), valid);
        })
        .expect("spawn a validation thread");
    if let Err(panic) = validated.join() {
        std::panic::resume_unwind(panic);
    }
});
