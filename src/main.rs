//! `cachewarden`: parse the command line, set up the process (TLS provider, runtime) and run the command
//! (`dispatch`).

use std::process::ExitCode;

use cachewarden::cli::exit::USAGE as EXIT_USAGE;

fn main() -> ExitCode {
    // The shell asking for completions (COMPLETE=bash cachewarden …) is answered here, and the process exits.
    cachewarden::cli::completion::answer_if_asked();
    let cli = match cachewarden::cli::parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    // Both TLS stacks (Redis, MySQL) use rustls; pick its crypto once for the process. An error only means a
    // provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can always be built on a supported OS");
    runtime.block_on(cachewarden::cli::dispatch::run(cli))
}
