//! `smssh::aws::ec2::discover` against a real moto: instances created with boto3 in a VPC whose
//! CIDR is 127.0.0.0/16, so that their private IP addresses are loopback addresses on which
//! the harness's sshd workers can listen (the end-to-end `--ec2-filter` test builds on that).
//!
//! Moto accepts a loopback VPC and subnet, and takes `PrivateIpAddress` in `RunInstances`
//! as given (even 127.0.0.2 and .3, which AWS reserves in every subnet). An instance
//! `RunInstances` returns as `pending` is `running` from the next `DescribeInstances` on.
//! Moto pages `DescribeInstances` by reservation when `MaxResults` is given, which
//! [`discovery_follows_next_token_across_pages`] checks by counting the requests moto logged.
//!
//! Every test configures its SDK explicitly (endpoint, region, dummy key); nothing here reads
//! or changes the process environment.

mod common;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use common::*;
use smssh::aws::ec2::{self, Ec2Error, Ec2Filter};

const TAGGED: &str = r#"{"RotateSSHKeys": "True"}"#;

/// The fleet most tests share: tagged running instances out of numeric order (.10 before .9,
/// .100 last, .2 first, so text order would differ), one of them also `Role=web`, and the
/// instances that must not be found: untagged, tagged False, tagged but stopped, tagged but
/// terminated.
fn fleet_spec() -> serde_json::Value {
    let tagged: serde_json::Value = serde_json::from_str(TAGGED).expect("TAGGED is JSON");
    serde_json::json!([
        {"ip": "127.0.0.10", "tags": tagged},
        {"ip": "127.0.0.9", "tags": {"RotateSSHKeys": "True", "Role": "web"}, "type": "t3.small"},
        {"ip": "127.0.0.3"},
        {"ip": "127.0.0.100", "tags": tagged},
        {"ip": "127.0.0.4", "tags": {"RotateSSHKeys": "False"}},
        {"ip": "127.0.0.5", "tags": tagged, "state": "stopped"},
        {"ip": "127.0.0.6", "tags": tagged, "state": "terminated"},
        {"ip": "127.0.0.2", "tags": tagged},
    ])
}

/// The tagged running instances of [`fleet_spec`], in numeric order.
const TAGGED_RUNNING: [&str; 4] = ["127.0.0.2", "127.0.0.9", "127.0.0.10", "127.0.0.100"];

/// An SDK configuration that reaches moto with `key` (id, secret) and nothing else: no
/// profile files, no environment, no instance metadata.
fn sdk_config_with_key(endpoint: &str, key: (&str, &str)) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            key.0,
            key.1,
            None,
            None,
            "smssh-test",
        )))
        .build()
}

fn sdk_config(moto: &Moto) -> SdkConfig {
    sdk_config_with_key(&moto.endpoint(), ("testing", "testing"))
}

fn filters(texts: &[&str]) -> Vec<Ec2Filter> {
    texts
        .iter()
        .map(|text| ec2::parse_filter(text).unwrap_or_else(|e| panic!("{text:?}: {e}")))
        .collect()
}

/// The private addresses in what [`ec2::discover`] found.
fn addresses(found: Result<Vec<ec2::Instance>, Ec2Error>) -> Result<Vec<String>, Ec2Error> {
    found.map(|instances| instances.into_iter().map(|i| i.private_address).collect())
}

fn discover(moto: &Moto, config: &SdkConfig, texts: &[&str]) -> Result<Vec<String>, Ec2Error> {
    addresses(moto.block_on(ec2::discover(config, &filters(texts), ec2::PAGE_SIZE)))
}

#[test]
fn discovery_returns_the_tagged_running_instances_private_addresses_in_numeric_order() {
    let moto = Moto::start();
    moto.create_ec2_instances(&fleet_spec());
    let config = sdk_config(&moto);
    for form in [
        "tag:RotateSSHKeys=True",
        "Name=tag:RotateSSHKeys,Values=True",
    ] {
        let found = discover(&moto, &config, &[form])
            .unwrap_or_else(|e| panic!("{form}: {e}\nmoto log:\n{}", moto.log()));
        assert_eq!(found, TAGGED_RUNNING, "{form}");
    }
    // Several values are OR, several filters are AND.
    let found = discover(&moto, &config, &["tag:RotateSSHKeys=True,False"]).expect("OR");
    assert_eq!(
        found,
        [
            "127.0.0.2",
            "127.0.0.4",
            "127.0.0.9",
            "127.0.0.10",
            "127.0.0.100"
        ]
    );
    let found = discover(
        &moto,
        &config,
        &["tag:RotateSSHKeys=True", "instance-type=t3.small"],
    )
    .expect("AND");
    assert_eq!(found, ["127.0.0.9"]);
    // Without a filter, every running instance (not the stopped or terminated ones).
    let found = discover(&moto, &config, &[]).expect("no filter");
    assert_eq!(
        found,
        [
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.9",
            "127.0.0.10",
            "127.0.0.100"
        ]
    );
}

#[test]
fn a_filter_matching_nothing_is_the_no_match_error() {
    let moto = Moto::start();
    moto.create_ec2_instances(&fleet_spec());
    let config = sdk_config(&moto);
    for (texts, shown) in [
        (&["tag:RotateSSHKeys=Nope"][..], "tag:RotateSSHKeys=Nope"),
        // Tagged, but stopped: running is part of every query.
        (
            &["tag:RotateSSHKeys=True", "private-ip-address=127.0.0.5"][..],
            "tag:RotateSSHKeys=True and private-ip-address=127.0.0.5",
        ),
    ] {
        let err = discover(&moto, &config, texts).expect_err("nothing matches");
        assert!(matches!(err, Ec2Error::NoMatch { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("ec2: no running instance matches {shown}: check the tags and the region")
        );
    }
}

#[test]
fn a_malformed_filter_is_the_syntax_error() {
    let err = ec2::parse_filter("tag:RotateSSHKeys").expect_err("no '='");
    assert!(matches!(err, Ec2Error::BadFilter { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "ec2 filter \"tag:RotateSSHKeys\": no '=' between the filter name and its values: \
         write NAME=VALUE[,VALUE...] such as tag:RotateSSHKeys=True, or Name=tag:Role,Values=a,b"
    );
}

#[test]
fn discovery_follows_next_token_across_pages() {
    let moto = Moto::start();
    // Twelve reservations: with five per page (EC2's smallest page), three pages.
    let spec: Vec<serde_json::Value> = (20..32)
        .map(|n| serde_json::json!({"ip": format!("127.0.1.{n}"), "tags": {"Fleet": "paged"}}))
        .collect();
    moto.create_ec2_instances(&serde_json::Value::Array(spec));
    let config = sdk_config(&moto);
    let expected: Vec<String> = (20..32).map(|n| format!("127.0.1.{n}")).collect();
    let wanted = filters(&["tag:Fleet=paged"]);

    let before = moto.request_count("ec2.DescribeInstances");
    let found = addresses(moto.block_on(ec2::discover(&config, &wanted, 5)))
        .unwrap_or_else(|e| panic!("{e}\nmoto log:\n{}", moto.log()));
    assert_eq!(found, expected);
    assert_eq!(
        moto.request_count("ec2.DescribeInstances") - before,
        3,
        "three pages of five reservations\nmoto log:\n{}",
        moto.log()
    );

    let before = moto.request_count("ec2.DescribeInstances");
    let found = addresses(moto.block_on(ec2::discover(&config, &wanted, ec2::PAGE_SIZE)))
        .expect("one page");
    assert_eq!(found, expected);
    assert_eq!(
        moto.request_count("ec2.DescribeInstances") - before,
        1,
        "one page of 1000"
    );
}

#[test]
fn without_ec2_describe_instances_in_the_policy_access_is_denied() {
    let moto = Moto::start();
    moto.create_ec2_instances(&fleet_spec());
    let users = serde_json::json!({
        "may-describe": [
            {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
        ],
        "may-not": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        ],
    });
    let keys = moto.create_iam_users(&users);
    moto.enforce_iam();
    let config_for = |user: &str| {
        let (id, secret) = &keys[user];
        sdk_config_with_key(&moto.endpoint(), (id, secret))
    };

    let err =
        discover(&moto, &config_for("may-not"), &["tag:RotateSSHKeys=True"]).expect_err("denied");
    assert!(matches!(err, Ec2Error::AccessDenied { .. }), "{err:?}");
    let line = err.to_string();
    assert!(
        line.starts_with("ec2: DescribeInstances: AccessDenied: "),
        "{line}"
    );
    assert!(
        line.ends_with(": check that the instance role's policy allows ec2:DescribeInstances"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");

    let found = discover(
        &moto,
        &config_for("may-describe"),
        &["tag:RotateSSHKeys=True"],
    )
    .unwrap_or_else(|e| panic!("{e}\nmoto log:\n{}", moto.log()));
    assert_eq!(found, TAGGED_RUNNING);
}

/// `discover` with `config`, on a runtime of its own, for configurations that never reach
/// a server.
fn discover_offline(config: &SdkConfig) -> Result<Vec<String>, Ec2Error> {
    addresses(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime")
            .block_on(ec2::discover(
                config,
                &filters(&["tag:RotateSSHKeys=True"]),
                ec2::PAGE_SIZE,
            )),
    )
}

#[test]
// ProfileFiles' replacement lives in aws-runtime, which this crate does not depend on directly.
#[allow(deprecated)]
fn without_credentials_the_error_says_how_to_provide_them() {
    let moto = Moto::start();
    // A profile missing from the credentials file: what the default chain meets when
    // AWS_PROFILE is misspelled, resolved without touching the network.
    let dir = tempfile::tempdir().expect("cannot create a temp dir");
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[smssh-other]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("cannot write the credentials file");
    let profile_files = aws_config::profile::profile_file::ProfileFiles::builder()
        .with_file(
            aws_config::profile::profile_file::ProfileFileKind::Credentials,
            &credentials,
        )
        .build();
    let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .profile_files(profile_files)
        .profile_name("smssh-no-such-profile")
        .build();
    let config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build();
    let err = discover(&moto, &config, &["tag:RotateSSHKeys=True"]).expect_err("no key");
    assert!(matches!(err, Ec2Error::NoCredentials { .. }), "{err:?}");
    let line = err.to_string();
    assert!(
        line.starts_with("ec2: DescribeInstances: no AWS credentials: "),
        "{line}"
    );
    assert!(line.contains("smssh-no-such-profile"), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn an_endpoint_nobody_listens_on_is_unreachable() {
    // A port handed out by the harness and never bound: connections are refused.
    let port = free_port(&["127.0.0.1"]);
    let config = sdk_config_with_key(&format!("http://127.0.0.1:{port}"), ("testing", "testing"));
    let err = discover_offline(&config).expect_err("refused");
    assert!(matches!(err, Ec2Error::Unreachable { .. }), "{err:?}");
    let line = err.to_string();
    assert!(
        line.starts_with("ec2: DescribeInstances: cannot reach EC2: "),
        "{line}"
    );
    assert!(
        line.ends_with(": check the network, the region and AWS_ENDPOINT_URL"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn without_a_credentials_provider_the_error_says_how_to_provide_them() {
    let config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let err = discover_offline(&config).expect_err("no provider");
    assert!(matches!(err, Ec2Error::NoCredentials { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "ec2: DescribeInstances: no AWS credentials: no credentials provider is configured: \
         set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on an instance with a role"
    );
}

#[test]
fn without_a_region_the_error_points_at_the_region() {
    let config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "smssh-test",
        )))
        .build();
    let err = discover_offline(&config).expect_err("no region");
    assert!(matches!(err, Ec2Error::Unreachable { .. }), "{err:?}");
    let line = err.to_string();
    assert!(line.contains("Missing Region"), "{line}");
    assert!(
        line.ends_with(": check the network, the region and AWS_ENDPOINT_URL"),
        "{line}"
    );
}
