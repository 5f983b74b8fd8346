//! Compiles MeCab IPADIC sources (UTF-8) into a lindera dictionary; used by
//! `scripts/setup-lindera`.
//!
//! Usage: `build_lindera_dict <ipadic-source-dir> <output-dir>`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [source, output] = args.as_slice() else {
        eprintln!("usage: build_lindera_dict <ipadic-source-dir> <output-dir>");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    match kizuna_knowledge::sparse::build_ipadic_dictionary(source, output) {
        Ok(()) => {
            eprintln!(
                "built {} in {:.1} s",
                output.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
