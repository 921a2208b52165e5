//! `--retry CAUSE=N` as `queue create` and `launch` take it: retries by cause
//! (`liftoff_types::retry`), one flag per cause.

use anyhow::{bail, Context};
use liftoff_types::{ExitCodeRetry, RetryPolicy};

/// What `--retry` takes, for the help and the errors.
pub const FORMS: &str = "lost=N, preempted=N, start-timeout=N, build=N, exit-code=N or \
    exit-code=N:CODE,CODE..., max=N (all causes), backoff=SECONDS";

/// The policy the `--retry` flags give; `None` when there are none.
pub fn parse(flags: &[String]) -> anyhow::Result<Option<RetryPolicy>> {
    if flags.is_empty() {
        return Ok(None);
    }
    let mut policy = RetryPolicy::default();
    for flag in flags {
        let (key, value) = flag
            .split_once('=')
            .with_context(|| format!("--retry {flag:?}: expected CAUSE=N ({FORMS})"))?;
        let number = |text: &str| -> anyhow::Result<u32> {
            text.trim()
                .parse()
                .with_context(|| format!("--retry {flag:?}: {text:?} is not a whole number"))
        };
        match key.trim() {
            "lost" => policy.lost = Some(number(value)?),
            "preempted" => policy.preempted = Some(number(value)?),
            "start-timeout" => policy.start_timeout = Some(number(value)?),
            "build" => policy.build = Some(number(value)?),
            "max" => policy.max = Some(number(value)?),
            "backoff" => policy.backoff = Some(number(value)?),
            "exit-code" => {
                let (max, codes) = value.split_once(':').unwrap_or((value, ""));
                let codes = codes
                    .split(',')
                    .filter(|c| !c.trim().is_empty())
                    .map(|c| {
                        c.trim().parse::<i32>().with_context(|| {
                            format!("--retry {flag:?}: exit code {c:?} is not a number")
                        })
                    })
                    .collect::<anyhow::Result<Vec<i32>>>()?;
                policy.exit_code = Some(ExitCodeRetry {
                    max: number(max)?,
                    codes,
                });
            }
            other => bail!("--retry {flag:?}: unknown cause {other:?} (known: {FORMS})"),
        }
    }
    Ok(Some(policy))
}

/// A policy as one line: `exit-code 3 (1, 137) · preempted 5 · backoff 10 s`.
pub fn describe(policy: &RetryPolicy) -> String {
    let counts = [
        ("lost", policy.lost),
        ("preempted", policy.preempted),
        ("start-timeout", policy.start_timeout),
        ("build", policy.build),
    ];
    let mut parts: Vec<String> = counts
        .iter()
        .filter_map(|(name, n)| n.map(|n| format!("{name} {n}")))
        .collect();
    if let Some(e) = &policy.exit_code {
        let codes: Vec<String> = e.codes.iter().map(i32::to_string).collect();
        parts.push(match codes.is_empty() {
            true => format!("exit-code {} (any)", e.max),
            false => format!("exit-code {} ({})", e.max, codes.join(", ")),
        });
    }
    if let Some(n) = policy.max {
        parts.push(format!("max {n}"));
    }
    if let Some(s) = policy.backoff {
        parts.push(format!("backoff {s} s"));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_flags_read_as_a_policy_and_mistakes_are_named() {
        let flags: Vec<String> = ["exit-code=3:1,137", "preempted=2", "backoff=10", "max=4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse(&flags).unwrap().unwrap();
        assert_eq!(
            p.exit_code,
            Some(ExitCodeRetry {
                max: 3,
                codes: vec![1, 137]
            })
        );
        assert_eq!(
            (p.preempted, p.backoff, p.max),
            (Some(2), Some(10), Some(4))
        );
        assert_eq!(
            describe(&p),
            "preempted 2 · exit-code 3 (1, 137) · max 4 · backoff 10 s"
        );
        for (bad, says) in [
            ("exitcode=1", "unknown cause \"exitcode\""),
            ("lost", "expected CAUSE=N"),
            ("lost=two", "not a whole number"),
            ("exit-code=1:x", "exit code \"x\""),
        ] {
            let e = parse(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(parse(&[]).unwrap(), None);
    }
}
