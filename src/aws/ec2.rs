//! Finding the cluster's workers with EC2 `DescribeInstances`, the way the original AWS sample
//! selects the instances whose key it rotates (by tag, e.g. `tag:RotateSSHKeys=True`).
//!
//! Owns: the syntax of a command-line filter ([`parse_filter`]), the `DescribeInstances` call
//! with its pagination, and the mapping of its failures to [`Ec2Error`] variants whose messages
//! say what to do.
//!
//! Invariants: [`discover`] returns only instances in the `running` state (it adds that filter
//! itself, because a stopped or pending instance cannot answer SSH), reached at their private
//! IPv4 address (workers are reached from inside the VPC, and most have no public address), in
//! ascending numeric order without duplicates, so that two runs against the same fleet visit the
//! same hosts in the same order. It never returns an empty list: no match is an error, because
//! a fan-out that silently reaches nobody looks like success.
//!
//! Must not know: SSH, ports, users or how the caller reports errors; it hands out addresses
//! as text and the caller turns them into hosts.

use std::fmt;
use std::net::Ipv4Addr;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use aws_sdk_ec2::types::Filter;

/// The page size asked of `DescribeInstances`: the largest the API allows, so that a fleet of
/// up to a thousand reservations takes one call.
pub const PAGE_SIZE: i32 = 1000;

/// The example every filter syntax error ends with.
const FILTER_EXAMPLE: &str =
    "write NAME=VALUE[,VALUE...] such as tag:RotateSSHKeys=True, or Name=tag:Role,Values=a,b";

/// One DescribeInstances filter, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl fmt::Display for Ec2Filter {
    /// The `name=v1,v2` form, which [`parse_filter`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.values.join(","))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("ec2 filter {text:?}: {reason}: {FILTER_EXAMPLE}")]
    BadFilter { text: String, reason: String },
    #[error("ec2: DescribeInstances: {code}: {message}: check that the instance role's policy allows ec2:DescribeInstances")]
    AccessDenied { code: String, message: String },
    #[error("ec2: DescribeInstances: {code}: {message}: check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role) are valid and current")]
    BadCredentials { code: String, message: String },
    #[error("ec2: DescribeInstances: no AWS credentials: {reason}: set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on an instance with a role")]
    NoCredentials { reason: String },
    #[error("ec2: DescribeInstances: cannot reach EC2: {reason}: check the network, the region and AWS_ENDPOINT_URL")]
    Unreachable { reason: String },
    #[error("ec2: DescribeInstances: {code}: {message}: check the filter names (tag:KEY, instance-type, ...) and values; if they are right, retry later")]
    Service { code: String, message: String },
    #[error("ec2: no running instance matches {filters}: check the tags and the region")]
    NoMatch { filters: String },
}

/// Parses `tag:Key=Value` / `tag:Key=V1,V2` / `instance-type=t3.micro` (name=values), and the AWS CLI
/// shorthand `Name=tag:Role,Values=a,b`. Errors are one clear line (what is wrong, an example of the right form).
///
/// The name ends at the first `=`, so a tag key that itself holds `=` needs the shorthand form,
/// whose name ends at `,Values=`. Values are split on every `,`; EC2 matches `*` and `?` in them
/// as wildcards. Nothing is trimmed, because tag keys and values may hold spaces.
pub fn parse_filter(text: &str) -> Result<Ec2Filter, Ec2Error> {
    let bad = |reason: &str| Ec2Error::BadFilter {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, values) = if let Some(rest) = text.strip_prefix("Name=") {
        rest.split_once(",Values=")
            .ok_or_else(|| bad("the Name=... form needs ,Values= after the name"))?
    } else if text.starts_with("Values=") {
        return Err(bad("in the shorthand form Name= comes first"));
    } else {
        text.split_once('=')
            .ok_or_else(|| bad("no '=' between the filter name and its values"))?
    };
    if name.is_empty() {
        return Err(bad("the filter name is empty"));
    }
    if name == "tag:" {
        return Err(bad("the tag key after tag: is empty"));
    }
    if values.is_empty() {
        return Err(bad("no value after '='"));
    }
    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
    if values.iter().any(String::is_empty) {
        return Err(bad("a value between commas is empty"));
    }
    Ok(Ec2Filter {
        name: name.to_owned(),
        values,
    })
}

/// A running instance found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub private_address: String,
}

/// The running instances matching every filter (AND), in a stable order (sorted numerically
/// by private IPv4 address), following pagination (NextToken) with `page_size` reservations a
/// page (EC2 accepts 5 to 1000; [`PAGE_SIZE`] unless a test wants many pages). An instance
/// without a private address is skipped. Adds the filter instance-state-name=running itself.
///
/// An empty `filters` matches every running instance of the region. No match is
/// [`Ec2Error::NoMatch`].
pub async fn discover(
    config: &aws_config::SdkConfig,
    filters: &[Ec2Filter],
    page_size: i32,
) -> Result<Vec<Instance>, Ec2Error> {
    let client = aws_sdk_ec2::Client::new(config);
    let mut request_filters: Vec<Filter> = filters
        .iter()
        .map(|filter| {
            Filter::builder()
                .name(&filter.name)
                .set_values(Some(filter.values.clone()))
                .build()
        })
        .collect();
    request_filters.push(
        Filter::builder()
            .name("instance-state-name")
            .values("running")
            .build(),
    );
    // The SDK's paginator follows NextToken and stops if the service repeats a token, so a
    // misbehaving endpoint cannot keep this loop going forever.
    let mut pages = client
        .describe_instances()
        .set_filters(Some(request_filters))
        .into_paginator()
        .page_size(page_size)
        .send();
    let mut addresses: Vec<(Ipv4Addr, Instance)> = Vec::new();
    let mut unparsed: Vec<Instance> = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) => return Err(map_sdk_error(config, err).await),
        };
        let instances = page.reservations().iter().flat_map(|r| r.instances());
        for instance in instances {
            let Some(address) = instance.private_ip_address() else {
                continue;
            };
            let found = Instance {
                instance_id: instance.instance_id().unwrap_or_default().to_owned(),
                private_address: address.to_owned(),
            };
            // EC2 documents PrivateIpAddress as IPv4; anything else is still handed out as
            // text (after the IPv4 addresses) rather than dropped, so that a surprise shows up
            // as a failed connection naming the address instead of a missing worker.
            match address.parse::<Ipv4Addr>() {
                Ok(ip) => addresses.push((ip, found)),
                Err(_) => unparsed.push(found),
            }
        }
    }
    addresses.sort_by_key(|a| a.0);
    // Instances in two VPCs with overlapping CIDRs can share an address, but from this host
    // the address reaches one machine only; visiting it twice would run the command twice.
    addresses.dedup_by(|a, b| a.0 == b.0);
    unparsed.sort_by(|a, b| a.private_address.cmp(&b.private_address));
    unparsed.dedup_by(|a, b| a.private_address == b.private_address);
    let found: Vec<Instance> = addresses
        .into_iter()
        .map(|(_, instance)| instance)
        .chain(unparsed)
        .collect();
    if found.is_empty() {
        return Err(Ec2Error::NoMatch {
            filters: describe_filters(filters),
        });
    }
    Ok(found)
}

/// The filters as the user wrote them, for the no-match message.
fn describe_filters(filters: &[Ec2Filter]) -> String {
    if filters.is_empty() {
        return "(no filter)".to_owned();
    }
    filters
        .iter()
        .map(Ec2Filter::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

async fn map_sdk_error(
    config: &aws_config::SdkConfig,
    err: SdkError<DescribeInstancesError>,
) -> Ec2Error {
    let reason = crate::aws::describe_chain(&err);
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let (code, message) = crate::aws::code_and_message(
                status,
                service.raw().body().bytes(),
                service.err().code(),
                service.err().message(),
            );
            classify_service_error(status, code, message)
        }
        // A failure before anything was sent: credentials, region or endpoint configuration.
        SdkError::ConstructionFailure(_) => diagnose_local_failure(config, reason).await,
        SdkError::DispatchFailure(failure) if failure.is_user() || failure.is_other() => {
            diagnose_local_failure(config, reason).await
        }
        // Dispatch I/O, timeout and response failures, and kinds this SDK version does not have
        // yet (SdkError is non-exhaustive), are all a call that never got a service answer.
        _ => Ec2Error::Unreachable { reason },
    }
}

/// A failure before anything was sent: missing credentials, or else a missing region or
/// endpoint, whose text (e.g. "Missing Region") is in the reason.
async fn diagnose_local_failure(config: &aws_config::SdkConfig, reason: String) -> Ec2Error {
    match crate::aws::missing_credentials(config, &reason).await {
        Some(reason) => Ec2Error::NoCredentials { reason },
        None => Ec2Error::Unreachable { reason },
    }
}

/// Sorts a service answer by what the user has to fix. Credential problems come before the
/// 403 rule because EC2 and STS also answer bad signatures and unknown keys with 403.
fn classify_service_error(status: u16, code: String, message: String) -> Ec2Error {
    let bad_credentials = matches!(
        code.as_str(),
        "AuthFailure"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "RequestExpired"
            | "ExpiredToken"
            | "ExpiredTokenException"
    ) || status == 401;
    if bad_credentials {
        Ec2Error::BadCredentials { code, message }
    } else if code == "UnauthorizedOperation" || code.starts_with("AccessDenied") || status == 403 {
        Ec2Error::AccessDenied { code, message }
    } else {
        Ec2Error::Service { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: &str, values: &[&str]) -> Ec2Filter {
        Ec2Filter {
            name: name.to_owned(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn parse_filter_accepts_both_forms() {
        let cases: &[(&str, Ec2Filter)] = &[
            (
                "tag:RotateSSHKeys=True",
                filter("tag:RotateSSHKeys", &["True"]),
            ),
            ("tag:Role=a,b", filter("tag:Role", &["a", "b"])),
            (
                "instance-type=t3.micro",
                filter("instance-type", &["t3.micro"]),
            ),
            ("tag:Name=worker-*", filter("tag:Name", &["worker-*"])),
            (
                "tag-key=RotateSSHKeys",
                filter("tag-key", &["RotateSSHKeys"]),
            ),
            // The name ends at the first '=', so a value may hold '='.
            ("tag:Expr=a=b", filter("tag:Expr", &["a=b"])),
            // Tag keys and values may hold spaces; nothing is trimmed.
            ("tag:My Key=two words", filter("tag:My Key", &["two words"])),
            ("Name=tag:Role,Values=a,b", filter("tag:Role", &["a", "b"])),
            (
                "Name=instance-type,Values=t3.micro",
                filter("instance-type", &["t3.micro"]),
            ),
            // Only the shorthand form can name a tag key holding '='.
            ("Name=tag:k=v,Values=x", filter("tag:k=v", &["x"])),
        ];
        for (text, expected) in cases {
            match parse_filter(text) {
                Ok(parsed) => assert_eq!(&parsed, expected, "parsing {text:?}"),
                Err(err) => panic!("parsing {text:?} failed: {err}"),
            }
        }
    }

    #[test]
    fn parse_filter_refuses_malformed_text_with_one_line_and_an_example() {
        let cases: &[(&str, &str)] = &[
            ("", "no '=' between the filter name and its values"),
            (
                "tag:RotateSSHKeys",
                "no '=' between the filter name and its values",
            ),
            ("=True", "the filter name is empty"),
            ("tag:=True", "the tag key after tag: is empty"),
            ("tag:RotateSSHKeys=", "no value after '='"),
            ("tag:Role=a,,b", "a value between commas is empty"),
            ("tag:Role=a,", "a value between commas is empty"),
            (
                "Name=tag:Role",
                "the Name=... form needs ,Values= after the name",
            ),
            ("Name=tag:Role,Values=", "no value after '='"),
            ("Name=,Values=a", "the filter name is empty"),
            (
                "Values=a,Name=tag:Role",
                "in the shorthand form Name= comes first",
            ),
        ];
        for (text, reason) in cases {
            let err = match parse_filter(text) {
                Ok(parsed) => panic!("{text:?} parsed as {parsed:?}"),
                Err(err) => err,
            };
            assert!(
                matches!(&err, Ec2Error::BadFilter { reason: r, .. } if r == reason),
                "{text:?}: {err:?}"
            );
            let line = err.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.starts_with(&format!("ec2 filter {text:?}: {reason}: ")),
                "{line}"
            );
            assert!(line.ends_with(FILTER_EXAMPLE), "{line}");
        }
    }

    #[test]
    fn a_filter_displays_as_it_parses() {
        for text in ["tag:Role=a,b", "instance-type=t3.micro"] {
            let parsed = parse_filter(text).map_err(|e| e.to_string());
            assert_eq!(parsed.map(|f| f.to_string()), Ok(text.to_owned()));
        }
    }

    #[test]
    fn service_errors_are_sorted_by_what_to_fix() {
        let cases: &[(u16, &str, &str)] = &[
            (403, "UnauthorizedOperation", "AccessDenied"),
            (403, "AccessDenied", "AccessDenied"),
            (400, "AccessDeniedException", "AccessDenied"),
            (403, "HTTP 403", "AccessDenied"),
            (401, "AuthFailure", "BadCredentials"),
            (403, "SignatureDoesNotMatch", "BadCredentials"),
            (400, "RequestExpired", "BadCredentials"),
            (400, "InvalidParameterValue", "Service"),
            (503, "Unavailable", "Service"),
        ];
        for (status, code, kind) in cases {
            let err = classify_service_error(*status, (*code).to_owned(), "msg".to_owned());
            let got = match &err {
                Ec2Error::AccessDenied { .. } => "AccessDenied",
                Ec2Error::BadCredentials { .. } => "BadCredentials",
                Ec2Error::Service { .. } => "Service",
                other => panic!("{status} {code}: unexpected {other:?}"),
            };
            assert_eq!(got, *kind, "{status} {code}");
        }
        let denied = classify_service_error(403, "UnauthorizedOperation".into(), "nope".into());
        assert_eq!(
            denied.to_string(),
            "ec2: DescribeInstances: UnauthorizedOperation: nope: check that the instance \
             role's policy allows ec2:DescribeInstances"
        );
    }

    #[test]
    fn no_match_names_the_filters() {
        let err = Ec2Error::NoMatch {
            filters: describe_filters(&[
                filter("tag:RotateSSHKeys", &["True"]),
                filter("instance-type", &["t3.micro", "t3.small"]),
            ]),
        };
        assert_eq!(
            err.to_string(),
            "ec2: no running instance matches tag:RotateSSHKeys=True and \
             instance-type=t3.micro,t3.small: check the tags and the region"
        );
    }
}
