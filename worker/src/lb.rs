//! Load-balancing choice among the downstreams of a route that have an idle connection.
//!
//! `rtt` improves on RProxy's (which picked the single lowest last-RTT connection and so sent
//! nearly everything to one place): each downstream keeps a smoothed response time, and the
//! choice is random with weight `1 / ((srtt + 1 ms)^2 * (in_flight + 1))`. Two equal
//! downstreams share the traffic; one ten times slower (5 ms against 0.5 ms) gets about 6% of
//! it, and a busy one is chosen less. The 1 ms added to every srtt keeps sub-millisecond jitter
//! (loopback, a LAN, a loaded host) from starving a downstream: without it, one unlucky sample
//! of 1.5 ms against 0.3 ms cut a downstream's share to a few percent, and the fewer samples
//! it then got, the slower its average recovered.

/// What the balancer sees of one downstream.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Idle established connections.
    pub idle: usize,
    /// Requests being served now.
    pub in_flight: u32,
    /// Smoothed response time in microseconds; `None` before the first sample.
    pub srtt_us: Option<f64>,
}

pub use rproxy_shared::config::LbMethod;

/// Index into `views` of the downstream to use, or `None` when none has an idle connection.
/// `rr` is the route's round-robin cursor.
pub fn choose(method: LbMethod, views: &[View], rr: &mut usize, rng: &mut Rng) -> Option<usize> {
    let n = views.len();
    if n == 0 {
        return None;
    }
    match method {
        LbMethod::None => views.iter().position(|v| v.idle > 0),
        LbMethod::Roundrobin => {
            let start = *rr % n;
            let pick = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| views[i].idle > 0)?;
            *rr = pick + 1;
            Some(pick)
        }
        LbMethod::MostIdle => {
            let (i, v) = views
                .iter()
                .enumerate()
                .max_by_key(|(i, v)| (v.idle, n - i))?;
            (v.idle > 0).then_some(i)
        }
        LbMethod::Random => {
            let count = views.iter().filter(|v| v.idle > 0).count();
            if count == 0 {
                return None;
            }
            let k = (rng.next_u64() % count as u64) as usize;
            views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.idle > 0)
                .nth(k)
                .map(|(i, _)| i)
        }
        LbMethod::Rtt => {
            // Unmeasured downstreams count as the best measured one, so they get probed.
            let best = views
                .iter()
                .filter_map(|v| v.srtt_us)
                .fold(f64::INFINITY, f64::min);
            let default = if best.is_finite() { best } else { 1000.0 };
            let weight = |v: &View| {
                let s = v.srtt_us.unwrap_or(default).max(0.0) + JITTER_US;
                1.0 / (s * s * f64::from(v.in_flight + 1))
            };
            let total: f64 = views.iter().filter(|v| v.idle > 0).map(weight).sum();
            if total <= 0.0 {
                return None;
            }
            let mut x = rng.unit() * total;
            let mut last = None;
            for (i, v) in views.iter().enumerate().filter(|(_, v)| v.idle > 0) {
                last = Some(i);
                x -= weight(v);
                if x <= 0.0 {
                    return Some(i);
                }
            }
            last
        }
    }
}

/// Added to every smoothed response time before weighting (see the module doc).
const JITTER_US: f64 = 1000.0;

/// Exponentially weighted moving average of response times (alpha 0.2).
pub fn smooth(old: Option<f64>, sample_us: f64) -> f64 {
    match old {
        None => sample_us,
        Some(s) => s * 0.8 + sample_us * 0.2,
    }
}

/// xorshift64*: the balancer needs cheap, not cryptographic, randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(idle: usize, srtt: Option<f64>) -> View {
        View {
            idle,
            in_flight: 0,
            srtt_us: srtt,
        }
    }

    fn share(method: LbMethod, views: &[View], runs: usize) -> Vec<usize> {
        let mut rr = 0;
        let mut rng = Rng::new(42);
        let mut hits = vec![0; views.len()];
        for _ in 0..runs {
            hits[choose(method, views, &mut rr, &mut rng).unwrap()] += 1;
        }
        hits
    }

    /// What lets the pool skip the balancer for a one-member route (`Pool::take_idle`).
    #[test]
    fn one_view_is_picked_when_idle() {
        for method in [
            LbMethod::None,
            LbMethod::Roundrobin,
            LbMethod::MostIdle,
            LbMethod::Random,
            LbMethod::Rtt,
        ] {
            let mut rng = Rng::new(7);
            for rr0 in [0, 1, 5] {
                for srtt in [None, Some(0.0), Some(250.0), Some(1e9)] {
                    let mut rr = rr0;
                    assert_eq!(choose(method, &[v(0, srtt)], &mut rr, &mut rng), None);
                    for idle in [1, 3] {
                        let mut rr = rr0;
                        let got = choose(method, &[v(idle, srtt)], &mut rr, &mut rng);
                        assert_eq!(got, Some(0), "{method:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn roundrobin_alternates_exactly_and_skips_busy() {
        let views = [v(1, None), v(1, None), v(1, None)];
        let mut rr = 0;
        let mut rng = Rng::new(1);
        let picks: Vec<_> = (0..6)
            .map(|_| choose(LbMethod::Roundrobin, &views, &mut rr, &mut rng).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let views = [v(1, None), v(0, None), v(1, None)];
        let picks: Vec<_> = (0..4)
            .map(|_| choose(LbMethod::Roundrobin, &views, &mut rr, &mut rng).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn none_takes_first_with_idle() {
        assert_eq!(
            share(LbMethod::None, &[v(0, None), v(2, None), v(5, None)], 10),
            [0, 10, 0]
        );
    }

    #[test]
    fn most_idle() {
        assert_eq!(
            share(
                LbMethod::MostIdle,
                &[v(1, None), v(7, None), v(5, None)],
                10
            ),
            [0, 10, 0]
        );
        assert_eq!(
            choose(LbMethod::MostIdle, &[v(0, None)], &mut 0, &mut Rng::new(3)),
            None
        );
    }

    #[test]
    fn random_is_spread_over_idle_ones() {
        let h = share(
            LbMethod::Random,
            &[v(1, None), v(0, None), v(1, None)],
            10_000,
        );
        assert_eq!(h[1], 0);
        assert!(h[0] > 4000 && h[2] > 4000, "{h:?}");
    }

    #[test]
    fn rtt_shares_equal_and_favours_fast() {
        let h = share(
            LbMethod::Rtt,
            &[v(1, Some(500.0)), v(1, Some(500.0))],
            10_000,
        );
        assert!(h[0] > 4000 && h[1] > 4000, "{h:?}");
        let h = share(
            LbMethod::Rtt,
            &[v(1, Some(500.0)), v(1, Some(5000.0))],
            10_000,
        );
        // (1.5 ms / 6 ms)^2: a 16x weight, about 94 %.
        assert!(h[0] > 9200, "{h:?}");
        // Sub-millisecond jitter does not starve: 0.3 ms against 1.5 ms still shares.
        let h = share(
            LbMethod::Rtt,
            &[v(1, Some(300.0)), v(1, Some(1500.0))],
            10_000,
        );
        assert!(h[1] > 1800, "{h:?}");
        // Unmeasured ones are tried.
        let h = share(LbMethod::Rtt, &[v(1, Some(500.0)), v(1, None)], 1000);
        assert!(h[1] > 300, "{h:?}");
    }

    #[test]
    fn nothing_idle_means_wait() {
        for m in [
            LbMethod::Rtt,
            LbMethod::Roundrobin,
            LbMethod::MostIdle,
            LbMethod::None,
            LbMethod::Random,
        ] {
            assert_eq!(
                choose(m, &[v(0, None), v(0, Some(1.0))], &mut 0, &mut Rng::new(9)),
                None
            );
        }
    }

    #[test]
    fn smoothing() {
        assert_eq!(smooth(None, 100.0), 100.0);
        assert!((smooth(Some(100.0), 200.0) - 120.0).abs() < 1e-9);
    }
}
