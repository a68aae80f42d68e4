//! The AWS configuration every AWS client of an invocation shares.
//!
//! Owns: how region and profile overrides combine with aws-config's default chain, which
//! already honours `AWS_REGION`, `AWS_PROFILE`, SSO, instance roles and `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_<SERVICE>`. Invariant: loaded once per invocation, so credentials are
//! resolved once whatever the number of clients. Must not know: any one service.

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
