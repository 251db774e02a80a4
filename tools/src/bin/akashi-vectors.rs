//! `akashi-vectors`: prints akashi's interoperability vectors (see `tools::vectors`).
//!
//! Usage: `cargo run -p tools --bin akashi-vectors > ledger/tests/vectors/akashi_vectors.json`.

fn main() -> anyhow::Result<()> {
    print!("{}", tools::vectors::generate()?);
    Ok(())
}
