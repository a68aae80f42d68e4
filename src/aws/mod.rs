//! The AWS configuration every AWS client of an invocation shares.
//!
//! Owns: how region and profile overrides combine with aws-config's default chain, which
//! already honours `AWS_REGION`, `AWS_PROFILE`, SSO, instance roles and `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_<SERVICE>`. Invariant: loaded once per invocation, so credentials are
//! resolved once whatever the number of clients. Must not know: any one service.

pub mod ec2;
pub mod s3;
pub mod secret;

use aws_config::BehaviorVersion;

/// Region and profile chosen on the command line or in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
}

pub async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    loader.load().await
}

/// The code and message of a service's error answer. They come from the SDK when the body is
/// in the service's own format; a denial written by an IAM layer or a proxy (an XML
/// `<ErrorResponse>`, even on a JSON service) leaves the SDK without a code, and then the
/// body's `<Code>`/`<Message>` or at least the HTTP status still say what happened.
pub(crate) fn code_and_message(
    status: u16,
    body: Option<&[u8]>,
    sdk_code: Option<&str>,
    sdk_message: Option<&str>,
) -> (String, String) {
    let body = body.map(String::from_utf8_lossy).unwrap_or_default();
    let code = sdk_code
        .map(str::to_owned)
        .or_else(|| xml_element(&body, "Code"))
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = sdk_message
        .map(str::to_owned)
        .or_else(|| xml_element(&body, "Message"))
        .unwrap_or_else(|| "no message".to_owned());
    (code, message)
}

/// The text of the first `<name>...</name>` in an XML error body, if any.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_owned()).filter(|text| !text.is_empty())
}

/// Joins an error and its sources on one line, because the SDK's top-level messages
/// ("dispatch failure") say nothing an operator can act on. Line breaks inside a source
/// become spaces so the user's error stays one line.
pub(crate) fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = next.source();
    }
    parts.join(": ").replace(['\r', '\n'], " ")
}

/// Tells a missing credential from the other failures that happen before a request is sent.
/// The SDK resolves credentials inside its dispatch step and reports a failure there exactly
/// like a missing region or an unresolvable endpoint, so the only reliable test is to ask the
/// credentials provider again. That costs a second resolution, but only on a call that has
/// already failed. Returns the reason to show when credentials are what is missing: the
/// first failure's text, because some providers remember only a summary after failing once.
pub(crate) async fn missing_credentials(
    config: &aws_config::SdkConfig,
    first_failure: &str,
) -> Option<String> {
    use aws_sdk_secretsmanager::config::ProvideCredentials;
    match config.credentials_provider() {
        None => Some("no credentials provider is configured".to_owned()),
        Some(provider) => provider
            .provide_credentials()
            .await
            .is_err()
            .then(|| first_failure.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_sdk_then_the_xml_body_then_the_status() {
        let xml = b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: u is not authorized</Message></Error></Errors></ErrorResponse>";
        type Case<'a> = (
            u16,
            Option<&'a [u8]>,
            Option<&'a str>,
            Option<&'a str>,
            (&'a str, &'a str),
        );
        let cases: [Case; 4] = [
            (
                400,
                None,
                Some("ResourceNotFoundException"),
                Some("gone"),
                ("ResourceNotFoundException", "gone"),
            ),
            (
                403,
                Some(xml),
                None,
                None,
                ("AccessDenied", "User: u is not authorized"),
            ),
            (403, Some(b"{}"), None, None, ("HTTP 403", "no message")),
            (
                500,
                Some(b"<Code></Code>"),
                None,
                Some("m"),
                ("HTTP 500", "m"),
            ),
        ];
        for (status, body, code, message, expected) in cases {
            let (c, m) = code_and_message(status, body, code, message);
            assert_eq!((c.as_str(), m.as_str()), expected);
        }
    }

    #[test]
    fn error_chains_become_one_line() {
        let inner = std::io::Error::other("connection refused\nby peer");
        let outer = std::io::Error::other(inner);
        assert_eq!(describe_chain(&outer), "connection refused by peer");
    }
}
