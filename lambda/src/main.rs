//! The Secrets Manager rotation function for smssh's cluster key pair. It reads its settings
//! from the environment once, then hands each rotation event to the smssh library, which does
//! the step exactly as `smssh rotate --step` would. See ARCHITECTURE.md and deploy/.
#![forbid(unsafe_code)]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use smssh::audit::{Auditor, Invocation};
use smssh::rotation::function::{self, FunctionConfig, RotationEvent};
use smssh::rotation::{Note, Reporter};
use smssh::term::escape::visible;

/// As in the binaries: every freed heap block is wiped, so copies of the private key made by
/// the SDK and serde do not outlive their use.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

#[tokio::main]
async fn main() -> Result<(), Error> {
    // No core dumps, not dumpable: the function holds private keys in memory.
    let _ = smssh::key::hardening::lock_down();
    let config = match FunctionConfig::from_env(&|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(err) => {
            // One readable line in the function's log (returning the error would print its
            // Debug form); the runtime then reports the failed start.
            eprintln!("smssh-rotation-lambda: {}", visible(&err.to_string()));
            std::process::exit(1);
        }
    };
    let aws = smssh::aws::sdk_config(&smssh::aws::AwsSettings::default()).await;
    let config = Arc::new(config);
    // The same audit records as smssh writes, one JSON line each in the function's log: each
    // step and each worker's authorized_keys edit.
    let audit = Arc::new(Auditor::stdout(Invocation::current(
        "smssh-rotation-lambda",
    )));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RotationEvent>| {
        let config = Arc::clone(&config);
        let aws = aws.clone();
        let audit = Arc::clone(&audit);
        async move {
            let event = event.payload;
            // CloudWatch keeps what the function prints; key material never reaches here, and
            // text from workers or the event is made terminal-safe for whoever tails the log.
            let report: Reporter = Arc::new(|note, line: &str| match note {
                Note::Progress => println!("{}", visible(line)),
                Note::HostFailed => eprintln!("{}", visible(line)),
            });
            println!(
                "{}",
                visible(&format!(
                    "{} for secret {} version {}",
                    event.step, event.secret_id, event.client_request_token
                ))
            );
            match function::handle(&config, &aws, &event, report, audit).await {
                Ok(summary) => {
                    println!("{}", visible(&summary));
                    Ok::<String, Error>(summary)
                }
                Err(err) => {
                    // The message goes back to Secrets Manager, which records the failure
                    // and retries the step.
                    let line = visible(&err.to_string()).into_owned();
                    eprintln!("{line}");
                    Err(Error::from(line))
                }
            }
        }
    }))
    .await
}
