//! Fault injection: makes chosen native calls fail the ways a real network and platform do, so
//! the gateway's handling of each can be tried (`scimgate dev --faults`, `POST /_dev/faults`).
//!
//! Calls are counted from the moment a spec is set, so a test can aim at "the 3rd call of this
//! operation" without knowing what came before. Everything is deterministic: a rule names a call
//! by its position or its service, and random faults come from a seeded generator.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The connection is closed before the call is carried out.
    Reset,
    /// The call is carried out, then the connection is closed without an answer.
    Lost,
    /// `500 Unable to Invoke Service <S> on <E>`, the call not carried out.
    Error500,
    /// The call is carried out and answered later than the gateway waits.
    Slow,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::Reset,
        FaultKind::Lost,
        FaultKind::Error500,
        FaultKind::Slow,
    ];

    fn parse(text: &str) -> Option<FaultKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Reset => "reset",
            FaultKind::Lost => "lost",
            FaultKind::Error500 => "error500",
            FaultKind::Slow => "slow",
        }
    }
}

/// One rule: which call fails, and how. With `call` alone, the n-th call (1-based) after the
/// spec was set; with `service` alone, every call to that service (the first `times` of them
/// when given); with both, the n-th call to that service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

/// What `--faults` and `POST /_dev/faults` take.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// Random faults: each call fails with probability `rate`, drawn from a generator seeded
    /// with `seed` (0 when absent), of a kind drawn from `kinds` (all four when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<FaultKind>,
    /// How late a `slow` answer comes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<u64>,
}

impl FaultSpec {
    /// The command-line form: comma-separated items, each `KIND@N` (the n-th call),
    /// `KIND:SERVICE` (every call to it), `KIND:SERVICE@N` (its n-th call), `KIND:SERVICE*M`
    /// (its first m calls), or a setting `seed=N`, `rate=P`, `kinds=KIND|KIND`, `slow_ms=MS`.
    /// A spec starting with `{` is read as the JSON the control endpoint takes.
    pub fn parse(text: &str) -> Result<FaultSpec, String> {
        let text = text.trim();
        if text.starts_with('{') {
            return serde_json::from_str(text).map_err(|e| format!("fault spec: {e}"));
        }
        let mut spec = FaultSpec::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some((key, value)) = item.split_once('=') {
                let bad = || format!("fault spec: {item:?} has an invalid value");
                match key.trim() {
                    "seed" => spec.seed = Some(value.trim().parse().map_err(|_| bad())?),
                    "rate" => {
                        let rate: f64 = value.trim().parse().map_err(|_| bad())?;
                        if !(0.0..=1.0).contains(&rate) {
                            return Err(bad());
                        }
                        spec.rate = Some(rate);
                    }
                    "slow_ms" => spec.slow_ms = Some(value.trim().parse().map_err(|_| bad())?),
                    "kinds" => {
                        for k in value.split('|') {
                            spec.kinds.push(FaultKind::parse(k).ok_or_else(bad)?);
                        }
                    }
                    other => return Err(format!("fault spec: unknown setting {other:?}")),
                }
                continue;
            }
            spec.faults.push(parse_rule(item)?);
        }
        Ok(spec)
    }
}

fn parse_rule(item: &str) -> Result<FaultRule, String> {
    let bad = || {
        format!(
            "fault spec: {item:?} is not KIND@N, KIND:SERVICE, KIND:SERVICE@N or KIND:SERVICE*M \
             (kinds: reset, lost, error500, slow)"
        )
    };
    let (head, count) = match item.find(['@', '*']) {
        Some(i) => (&item[..i], Some((&item[i..i + 1], &item[i + 1..]))),
        None => (item, None),
    };
    let (kind, service) = match head.split_once(':') {
        Some((k, s)) if !s.trim().is_empty() => (k, Some(s.trim().to_string())),
        Some(_) => return Err(bad()),
        None => (head, None),
    };
    let kind = FaultKind::parse(kind).ok_or_else(bad)?;
    let mut rule = FaultRule {
        kind,
        call: None,
        service,
        times: None,
    };
    match count {
        Some((mark, n)) => {
            let n: u64 = n.trim().parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            if mark == "@" {
                rule.call = Some(n);
            } else {
                rule.times = Some(n);
            }
        }
        None if rule.service.is_none() => return Err(bad()),
        None => {}
    }
    if rule.times.is_some() && rule.service.is_none() {
        return Err(bad());
    }
    Ok(rule)
}

/// The spec in force and what it has counted.
#[derive(Debug)]
pub(crate) struct Faults {
    spec: FaultSpec,
    calls: u64,
    fired: u64,
    per_service: HashMap<String, u64>,
    rng: u64,
    /// How late a `slow` answer comes when the spec does not say.
    slow_default: Duration,
}

/// What became of the calls counted under one spec.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultCounts {
    pub calls: u64,
    pub faults: u64,
}

impl Faults {
    pub(crate) fn new(slow_default: Duration) -> Self {
        let mut faults = Faults {
            spec: FaultSpec::default(),
            calls: 0,
            fired: 0,
            per_service: HashMap::new(),
            rng: 0,
            slow_default,
        };
        faults.set(FaultSpec::default());
        faults
    }

    /// Replaces the spec and starts counting afresh; returns what the previous one counted.
    pub(crate) fn set(&mut self, spec: FaultSpec) -> FaultCounts {
        let before = self.counts();
        // A zero state would stay zero: xorshift needs a non-zero seed.
        self.rng = spec.seed.unwrap_or(0) ^ 0x9E37_79B9_7F4A_7C15;
        self.spec = spec;
        self.calls = 0;
        self.fired = 0;
        self.per_service.clear();
        before
    }

    pub(crate) fn set_slow_default(&mut self, slow: Duration) {
        self.slow_default = slow;
    }

    pub(crate) fn counts(&self) -> FaultCounts {
        FaultCounts {
            calls: self.calls,
            faults: self.fired,
        }
    }

    pub(crate) fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    pub(crate) fn slow_delay(&self) -> Duration {
        self.spec
            .slow_ms
            .map(Duration::from_millis)
            .unwrap_or(self.slow_default)
    }

    /// Counts one call to `service` and says whether (and how) it fails.
    pub(crate) fn decide(&mut self, service: &str) -> Option<FaultKind> {
        self.calls += 1;
        let key = service.to_ascii_lowercase();
        let nth_of_service = {
            let n = self.per_service.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let calls = self.calls;
        let ruled = self.spec.faults.iter().find_map(|rule| {
            let service_matches = rule
                .service
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(service));
            if !service_matches {
                return None;
            }
            let hit = match (&rule.service, rule.call, rule.times) {
                (None, Some(n), _) => calls == n,
                (Some(_), Some(n), _) => nth_of_service == n,
                (Some(_), None, Some(m)) => nth_of_service <= m,
                (Some(_), None, None) => true,
                (None, None, _) => false,
            };
            hit.then_some(rule.kind)
        });
        let kind = ruled.or_else(|| self.random_fault());
        if kind.is_some() {
            self.fired += 1;
        }
        kind
    }

    fn random_fault(&mut self) -> Option<FaultKind> {
        let rate = self.spec.rate.filter(|r| *r > 0.0)?;
        let draw = self.next_random();
        if (draw >> 11) as f64 / (1u64 << 53) as f64 >= rate {
            return None;
        }
        let pick = self.next_random();
        let kinds: &[FaultKind] = if self.spec.kinds.is_empty() {
            &FaultKind::ALL
        } else {
            &self.spec.kinds
        };
        let pick = pick % kinds.len() as u64;
        kinds.get(pick as usize).copied()
    }

    /// xorshift64*: small, seedable, and the same sequence on every machine.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Emulated network and platform latency (`scimgate dev --platform-latency`): every native
/// request is answered no sooner than `base` ± up to `jitter` (uniform) after it arrived, the
/// platform's own work included, as a remote platform whose calls take that long; so a remote
/// platform's behaviour (how many calls a SCIM operation makes, whether they overlap) shows on
/// one machine. The wait is a timer, never a blocked thread.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    base: Duration,
    jitter: Duration,
    /// Jitter needs spread, not secrecy: a counter mixed by splitmix64, lock-free.
    draws: std::sync::atomic::AtomicU64,
}

impl Latency {
    pub(crate) fn new(base: Duration, jitter: Duration) -> Self {
        Latency {
            base,
            jitter,
            draws: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The delay for the next request: `base` + a uniform draw in [-jitter, +jitter], never
    /// below zero.
    pub(crate) fn next_delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let n = self
            .draws
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        let offset = self.jitter.as_secs_f64() * (2.0 * unit - 1.0);
        Duration::from_secs_f64((self.base.as_secs_f64() + offset).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_reads_every_rule_shape() {
        let spec = FaultSpec::parse(
            "lost@3, error500:SetPropertyValues, slow:AddMember@2, reset:DeleteUser*2, seed=7, rate=0.5, kinds=lost|slow, slow_ms=900",
        )
        .unwrap();
        assert_eq!(spec.faults.len(), 4);
        assert_eq!(spec.faults[0].call, Some(3));
        assert_eq!(spec.faults[1].service.as_deref(), Some("SetPropertyValues"));
        assert_eq!(spec.faults[2].call, Some(2));
        assert_eq!(spec.faults[3].times, Some(2));
        assert_eq!(spec.seed, Some(7));
        assert_eq!(spec.kinds, vec![FaultKind::Lost, FaultKind::Slow]);
        assert_eq!(spec.slow_ms, Some(900));
        for bad in [
            "lost", "boom@1", "lost@0", "lost*2", "rate=2", "lost:@1", "x=1",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
        let json =
            FaultSpec::parse(r#"{"faults":[{"kind":"slow","call":2}],"slow_ms":5}"#).unwrap();
        assert_eq!(json.faults[0].kind, FaultKind::Slow);
    }

    #[test]
    fn calls_are_counted_from_when_the_spec_was_set() {
        let mut f = Faults::new(Duration::from_secs(1));
        f.decide("GetEntity");
        f.set(FaultSpec::parse("lost@2, error500:AddMember@2").unwrap());
        assert_eq!(f.decide("GetEntity"), None);
        assert_eq!(f.decide("AddMember"), Some(FaultKind::Lost));
        assert_eq!(f.decide("addmember"), Some(FaultKind::Error500));
        assert_eq!(f.decide("AddMember"), None);
        let counts = f.set(FaultSpec::default());
        assert_eq!((counts.calls, counts.faults), (4, 2));
    }

    #[test]
    fn random_faults_repeat_for_the_same_seed() {
        let run = |seed| {
            let mut f = Faults::new(Duration::from_secs(1));
            f.set(FaultSpec {
                seed: Some(seed),
                rate: Some(0.3),
                ..FaultSpec::default()
            });
            (0..200).map(|_| f.decide("X")).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let hits = run(1).iter().filter(|k| k.is_some()).count();
        assert!((30..=90).contains(&hits), "{hits}");
    }

    #[test]
    fn latency_stays_within_its_jitter_and_defaults_to_none() {
        assert_eq!(Latency::default().next_delay(), Duration::ZERO);
        let fixed = Latency::new(Duration::from_millis(10), Duration::ZERO);
        assert_eq!(fixed.next_delay(), Duration::from_millis(10));
        let jittered = Latency::new(Duration::from_millis(10), Duration::from_millis(2));
        let draws: Vec<Duration> = (0..1000).map(|_| jittered.next_delay()).collect();
        assert!(draws
            .iter()
            .all(|d| *d >= Duration::from_millis(8) && *d <= Duration::from_millis(12)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(9)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(11)));
        let floor = Latency::new(Duration::from_millis(1), Duration::from_millis(5));
        assert!((0..100).all(|_| floor.next_delay() <= Duration::from_millis(6)));
    }
}
