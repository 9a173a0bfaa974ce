//! A seeded, deterministic traffic model with ground truth, to evaluate the rules.
//!
//! [`Traffic`] yields the requests of one namespace second by second in *virtual* time:
//! benign clients plus injected attacks, one [`Scenario`] per rule, each labelled in the
//! [`GroundTruth`] (which client is an attacker, from when to when). The same stream can
//! drive the rule engine on a virtual clock ([`eval`]) or be sent over HTTP in real time
//! (the `palisade-loadgen` binary of `bench/loadgen`). Same seed, same traffic: the random
//! source is a hand-written xoshiro256** (no dependency whose stream could change).
//!
//! # The benign model
//!
//! - **Clients.** `clients` single-user IPs whose activity follows a Zipf law over their
//!   rank (exponent `client_zipf`, default 0.8: the top IP sends ~3–4 % of the requests,
//!   the median one ~70 a day), plus `nat_clients` NAT / corporate gateways, each carrying
//!   20–300 users: its activity and its logins are those of all its users together, with
//!   their mix of user agents (the hard negatives for Flooder and OAuth Abuser).
//! - **Volume.** A non-homogeneous Poisson process of mean `base_rate` requests per second
//!   with a diurnal shape `1 + 0.6·sin(2π(h − 8)/24)` (peak at 14:00, trough at 02:00).
//! - **Paths.** About 1000 concrete paths (API reads, searches, cart and orders, images,
//!   scripts, style sheets, a few videos) with Zipf popularity (exponent 1.1) over a shuffled
//!   order (videos last: the long tail); response sizes log-normal around each kind's median (2 KB for API JSON up to
//!   5 MB for videos).
//! - **Errors.** Per request: 404 1.5 %, 400 0.5 %, 401 0.5 %, 403 0.2 %, 5xx 0.3 % (API);
//!   404 0.5 % (static).
//! - **Logins.** Each user calls the token endpoint ([`TOKEN_PATH`]) 1–3 times a day (2 on
//!   average, diurnal), 3 % of them fail with 401. A successful call gives the client a new
//!   access token that its later requests carry (a NAT's users' tokens all show under its
//!   address).
//! - **Listings.** A benign request for the product listing reads the client's next listing
//!   page (`/api/v1/products?page=N`, 1 to 50, then back to 1): users page through
//!   listings, between other requests (the hard negative for API Scraper).
//! - **User agents.** A catalog of 120 browser and app user agents with Zipf popularity;
//!   a single-user IP uses one (10 %: two), a NAT uses those of its users.
//!
//!
//! # The populations that look like abuse ([`SimConfig::populated`])
//!
//! Off in [`SimConfig::default`] (the traffic the end-to-end tests send), on in the
//! evaluation ([`eval::EvalConfig::default`]):
//!
//! - **Mobile carriers (CGNAT).** `cgnat_carriers` carriers, each sharing `cgnat_addresses`
//!   public IPv4 addresses among `cgnat_users` app users: an address carries the requests,
//!   logins and tokens of dozens of users, with the app's user agents (one per app version
//!   and device family, [`APP_VARIANTS`] of them); the
//!   model spreads a carrier's users evenly over its addresses.
//! - **Health checkers.** `health_checkers` load-balancer addresses probing `/healthz` every
//!   `health_every` around the clock, with one user agent and no key.
//! - **IPv6 households.** `ipv6_households` /64 networks with 1–4 devices each; every device
//!   uses a privacy address that changes every day (one device in ten: every hour).
//! - **Integration partners.** `partners` partners, each calling from two servers with its
//!   own API key at a steady `partner_rate` day and night (at night ~3 % of the requests),
//!   renewing its token every hour.
//! - **Outages and retry storms.** `outages_per_day` outages of 5–15 minutes between 08:00
//!   and 20:00, during which the app answers 503 to everything. Each failed request is
//!   retried: by most clients with exponential backoff (1, 2, 4, … s, 6 tries), by a share
//!   `aggressive_retriers` of them every second until the app answers again (the retry
//!   storm).
//!
//! Every request carries an API key (the web front end's for browsers, the mobile app's for
//! app user agents, a partner's own), except the health checks.
//!
//! Not modelled (documented in `docs/detection.md`): weekly seasons and holidays, sessions
//! (requests are independent), misconfigured benign clients that fail all day.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use jiff::{SignedDuration, Timestamp};

use crate::key::{ClientKey, KeyHash};
use crate::rule_spec::RuleType;
use crate::sequence::PathShape;

pub mod eval;

/// The OAuth token endpoint of the model (the sidecar's default `--token-endpoint`).
pub const TOKEN_PATH: &str = "/oauth/token";

/// xoshiro256** seeded through SplitMix64: small, fast, and stable across releases.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A standard normal deviate (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape `sigma`.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// A Poisson count of mean `lambda` (Knuth below 500, normal approximation above).
    pub fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 500.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u32;
        }
        let limit = (-lambda).exp();
        let mut p = 1.0;
        let mut k = 0;
        loop {
            p *= self.f64();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

/// Samples an index with probability proportional to given weights (cumulative table).
#[derive(Debug, Clone)]
pub struct Weighted {
    cdf: Vec<f64>,
}

impl Weighted {
    /// A sampler over `weights` (at least one positive weight).
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        let cdf = weights
            .into_iter()
            .map(|w| {
                acc += w.max(0.0);
                acc
            })
            .collect();
        Self { cdf }
    }

    /// Zipf weights `1 / rank^s` over `n` ranks.
    pub fn zipf(n: usize, s: f64) -> Self {
        Self::new((1..=n).map(|r| (r as f64).powf(-s)))
    }

    /// A sampled index.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let x = rng.f64() * total;
        self.cdf
            .partition_point(|c| *c <= x)
            .min(self.cdf.len() - 1)
    }

    /// The probability of index `i`.
    pub fn share(&self, i: usize) -> f64 {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let lo = if i == 0 { 0.0 } else { self.cdf[i - 1] };
        (self.cdf[i] - lo) / total
    }
}

/// One attack scenario per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// One IP sending 3–15 requests per second (10–45 % of the namespace) for 5–30 min,
    /// hammering a few API endpoints with a script's user agent.
    Flooder,
    /// One IP downloading images and videos back to back (0.5–2 per second, 1–6 MB each)
    /// for 10–40 min.
    StaticContentScraper,
    /// One IP guessing passwords at `/api/v1/login` (0.1–1 per second, 95 % answered 401)
    /// for 30–120 min.
    BruteGuessor,
    /// One crawler (0.3–2 requests per second, 30–80 % on `/admin`, `/internal`, `/debug`
    /// paths the app answers 403) for 20–90 min.
    RobotAbuser,
    /// One IP farming OAuth tokens: a token call every 5–30 s with one user agent, for
    /// 1–4 h, plus a little API use.
    OAuthAbuser,
    /// Three Tor exit IPs sending ordinary-looking traffic (0.02–0.2 requests per second
    /// each) for 10–60 min; the rule's exit list holds them and 50 exits never seen.
    TorList,
    /// One IP walking the product ids (`/api/v1/products/N`, N + 1, …, from a random id,
    /// 3 % of its requests elsewhere) at 0.3–2 requests per second for 30–120 min.
    ApiScraper,
    /// A flooder hiding in IPv6: a new address of its /64 for every request, 3–15 requests
    /// per second for 5–30 min. Invisible by IP; the prefix rule's.
    RotatingFlooder,
    /// One API key guessing passwords from 200 addresses in turn (0.2–1 requests per second
    /// in all, 95 % answered 401, under 40 requests per address) for 30–120 min. Invisible
    /// by IP; the key rule's.
    KeyGuessor,
    /// Password guessing low and slow: one request every 20–60 s (95 % answered 401) for
    /// 2–4 h, never a burst.
    LowAndSlow,
}

impl Scenario {
    /// Every scenario, in rule order.
    pub const ALL: [Scenario; 10] = [
        Self::Flooder,
        Self::StaticContentScraper,
        Self::BruteGuessor,
        Self::RobotAbuser,
        Self::OAuthAbuser,
        Self::TorList,
        Self::ApiScraper,
        Self::RotatingFlooder,
        Self::KeyGuessor,
        Self::LowAndSlow,
    ];

    /// The rule type this scenario is meant to trigger.
    pub fn rule_type(self) -> RuleType {
        match self {
            Self::Flooder | Self::RotatingFlooder => RuleType::Flooder,
            Self::StaticContentScraper => RuleType::StaticContentScraper,
            Self::BruteGuessor | Self::KeyGuessor | Self::LowAndSlow => RuleType::BruteGuessor,
            Self::RobotAbuser => RuleType::RobotAbuser,
            Self::OAuthAbuser => RuleType::OAuthAbuser,
            Self::TorList => RuleType::TorList,
            Self::ApiScraper => RuleType::ApiScraper,
        }
    }

    /// The client key the scenario's attacker is caught by: its /64 for the rotating
    /// flooder, its API key for the key guessor, its address otherwise.
    pub fn client_key(self) -> crate::key::ClientKeyKind {
        use crate::key::ClientKeyKind;
        match self {
            Self::RotatingFlooder => ClientKeyKind::IpPrefix,
            Self::KeyGuessor => ClientKeyKind::ApiKey,
            _ => ClientKeyKind::Ip,
        }
    }

    /// The scenario's name (as on the command line: `flooder`, `static-content-scraper`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Flooder => "flooder",
            Self::StaticContentScraper => "static-content-scraper",
            Self::BruteGuessor => "brute-guessor",
            Self::RobotAbuser => "robot-abuser",
            Self::OAuthAbuser => "oauth-abuser",
            Self::TorList => "tor-list",
            Self::ApiScraper => "api-scraper",
            Self::RotatingFlooder => "rotating-flooder",
            Self::KeyGuessor => "key-guessor",
            Self::LowAndSlow => "low-and-slow",
        }
    }

    /// The scenario called `name` (see [`Scenario::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The model's parameters (see the module docs).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Virtual time of the first second (midnight of a day gives the documented shape).
    pub start: Timestamp,
    /// How long the traffic lasts.
    pub duration: SignedDuration,
    /// Single-user client IPs (default 10 000).
    pub clients: u32,
    /// NAT gateways with many users each (default 20).
    pub nat_clients: u32,
    /// Users per NAT gateway, drawn uniformly in this range (default 20–300).
    pub nat_users: (u32, u32),
    /// Mean benign requests per second over a day (default 20).
    pub base_rate: f64,
    /// Zipf exponent of client activity (default 0.8).
    pub client_zipf: f64,
    /// Zipf exponent of path popularity (default 1.1).
    pub path_zipf: f64,
    /// Token-endpoint calls per user per day (default 2).
    pub logins_per_user_day: f64,
    /// The attacks to inject: per entry, `attacks_per_kind` instances spread over the run.
    pub scenarios: Vec<Scenario>,
    /// Instances of each scenario (default 6), each from fresh IPs, spread evenly over the
    /// run so that they do not overlap.
    pub attacks_per_kind: u32,
    /// First address of the client space; client `i` gets `ip_base + i` (default 10.0.0.1).
    pub ip_base: Ipv4Addr,
    /// No attack starts before this offset (default 0): lets the windows fill first.
    pub warmup: SignedDuration,
    /// Requests per second per attacker IP, instead of the scenario's random rate.
    pub attack_rate: Option<f64>,
    /// Length of every attack, instead of the scenario's random length (still cut at the
    /// end of its slot).
    pub attack_duration: Option<SignedDuration>,
    /// Mobile carriers sharing addresses among their users (CGNAT; default 0, populated 2).
    pub cgnat_carriers: u32,
    /// Public addresses per carrier (default 32).
    pub cgnat_addresses: u32,
    /// App users per carrier (default 1500).
    pub cgnat_users: u32,
    /// Load-balancer health checkers (default 0, populated 3).
    pub health_checkers: u32,
    /// How often each checker probes (default 5 s).
    pub health_every: SignedDuration,
    /// IPv6 households, a /64 each (default 0, populated 400).
    pub ipv6_households: u32,
    /// Integration partners with their own API key (default 0, populated 3).
    pub partners: u32,
    /// Requests per second of each partner, day and night (default 0.25).
    pub partner_rate: f64,
    /// Outages per simulated day, 5–15 min each between 08:00 and 20:00 (default 0,
    /// populated 1).
    pub outages_per_day: u32,
    /// Share of clients that retry a failed request every second until it succeeds
    /// (default 0.1); the others back off exponentially.
    pub aggressive_retriers: f64,
}

impl SimConfig {
    /// The default model with every population that looks like abuse (see the module docs):
    /// what the evaluation runs.
    pub fn populated() -> Self {
        Self {
            cgnat_carriers: 2,
            health_checkers: 3,
            ipv6_households: 400,
            partners: 3,
            outages_per_day: 1,
            ..Self::default()
        }
    }
}

/// A benign population of the model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Population {
    /// A single user's address.
    SingleUser,
    /// An office NAT gateway (20–300 users).
    Office,
    /// A mobile carrier's shared address (CGNAT).
    MobileCarrier,
    /// A load-balancer health checker.
    HealthChecker,
    /// An IPv6 household (its /64; devices with privacy addresses).
    Ipv6Household,
    /// An integration partner (its servers and its API key).
    Partner,
    /// A client that retried every second through an outage (also counted in its own
    /// population).
    AggressiveRetrier,
    /// The API keys of the web front end and of the mobile app, shared by their users.
    SharedAppKey,
}

impl Population {
    /// Every population, in table order.
    pub const ALL: [Population; 8] = [
        Self::SingleUser,
        Self::Office,
        Self::MobileCarrier,
        Self::HealthChecker,
        Self::Ipv6Household,
        Self::Partner,
        Self::AggressiveRetrier,
        Self::SharedAppKey,
    ];

    /// How the evaluation's table names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::SingleUser => "single users",
            Self::Office => "office NAT gateways",
            Self::MobileCarrier => "mobile carrier CGNAT addresses",
            Self::HealthChecker => "load-balancer health checkers",
            Self::Ipv6Household => "IPv6 households (/64, privacy addresses)",
            Self::Partner => "integration partners (servers and key)",
            Self::AggressiveRetrier => "aggressive retriers in a retry storm",
            Self::SharedAppKey => "the web and mobile app keys",
        }
    }
}

/// The API key of the web front end (every browser request carries it).
pub const WEB_KEY: u32 = 0;
/// The API key of the mobile app (every app request carries it).
pub const MOBILE_KEY: u32 = 1;
/// Partner `j`'s API key is `PARTNER_KEY + j`.
pub const PARTNER_KEY: u32 = 100;
/// Attack `a`'s own API key (the key guessor's) is `ATTACK_KEY + a`.
pub const ATTACK_KEY: u32 = 10_000;
/// Mobile app user agents: one per app version and device family.
pub const APP_VARIANTS: usize = 40;

/// The digest the model gives API key `id` (as the sidecar would hash the key's text).
pub fn api_key_hash(id: u32) -> KeyHash {
    KeyHash::of(format!("sim-api-key-{id}").as_bytes())
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start: Timestamp::from_second(1_800_057_600).unwrap_or(Timestamp::UNIX_EPOCH),
            duration: SignedDuration::from_hours(24),
            clients: 10_000,
            nat_clients: 20,
            nat_users: (20, 300),
            base_rate: 20.0,
            client_zipf: 0.8,
            path_zipf: 1.1,
            logins_per_user_day: 2.0,
            scenarios: Vec::new(),
            attacks_per_kind: 6,
            ip_base: Ipv4Addr::new(10, 0, 0, 1),
            warmup: SignedDuration::ZERO,
            attack_rate: None,
            attack_duration: None,
            cgnat_carriers: 0,
            cgnat_addresses: 32,
            cgnat_users: 1500,
            health_checkers: 0,
            health_every: SignedDuration::from_secs(5),
            ipv6_households: 0,
            partners: 0,
            partner_rate: 0.25,
            outages_per_day: 0,
            aggressive_retriers: 0.1,
        }
    }
}

/// Kind of a path (for sizes and error rates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// JSON API.
    Api,
    /// Images, scripts, style sheets.
    Static,
    /// Large media.
    Video,
    /// The token endpoint.
    Token,
    /// Login form of the API (password guessing target).
    Login,
    /// Paths the app forbids (403).
    Forbidden,
    /// The health-check endpoint.
    Health,
}

/// One path of the catalog.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// The path.
    pub path: String,
    /// Its kind.
    pub kind: PathKind,
    /// Median response size in bytes.
    pub median_bytes: f64,
}

/// One injected attack and its ground truth.
#[derive(Debug, Clone)]
pub struct Attack {
    /// Index in [`GroundTruth::attacks`].
    pub id: u32,
    /// What it does.
    pub scenario: Scenario,
    /// Client indices of its IPs.
    pub clients: Vec<u32>,
    /// Its IPv4 addresses (none for the rotating flooder).
    pub ips: Vec<IpAddr>,
    /// The /64 the rotating flooder's addresses come from.
    pub prefix: Option<IpNet>,
    /// Its own API key (the key guessor's).
    pub key: Option<u32>,
    /// First request (virtual time).
    pub start: Timestamp,
    /// End (exclusive).
    pub end: Timestamp,
    /// Requests per second per IP.
    pub rate: f64,
    /// The user agent it uses (catalog index).
    pub ua: u16,
}

impl Attack {
    /// The clients a rule of the scenario's key kind must detect (recall counts these).
    pub fn identities(&self) -> Vec<ClientKey> {
        match (self.prefix, self.key) {
            (Some(net), _) => vec![ClientKey::IpPrefix(net)],
            (None, Some(k)) => vec![ClientKey::ApiKey(api_key_hash(k))],
            (None, None) => self.ips.iter().map(|ip| ClientKey::Ip(*ip)).collect(),
        }
    }
}

/// Whom a detected client key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// An injected attack (index in [`GroundTruth::attacks`]).
    Attacker(u32),
    /// A benign population.
    Benign(Population),
    /// Nobody the model knows (should not happen).
    Unknown,
}

/// What is true about a run: who the attackers are and when they attack.
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    /// The injected attacks.
    pub attacks: Vec<Attack>,
    /// IPs of the single-user benign clients.
    pub benign: Vec<IpAddr>,
    /// IPs of the NAT gateways (benign, high volume, many users).
    pub nat: Vec<IpAddr>,
    /// The Tor exit list to give the TorList rule (the Tor attackers' IPs and unseen exits).
    pub tor_exits: Vec<IpAddr>,
    /// Every benign IPv4 address and IPv6 /64 with its population.
    pub populations: HashMap<IpNet, Population>,
    /// The outages: the app answers 503 to everything from start to end.
    pub outages: Vec<(Timestamp, Timestamp)>,
}

impl GroundTruth {
    /// The attack `ip` belongs to, if any.
    pub fn attack_of(&self, ip: IpAddr) -> Option<&Attack> {
        self.attacks
            .iter()
            .find(|a| a.ips.contains(&ip) || a.prefix.is_some_and(|n| n.contains(&ip)))
    }

    /// Whom `key` belongs to: an attack, or a benign population (an address or prefix by
    /// its /64 or address, an API key by its owner). Aggressive retriers are reported by
    /// their own population here (the evaluation counts them apart).
    pub fn who(&self, key: &ClientKey) -> Who {
        let by_net =
            |net: IpNet| -> Who {
                if let Some(a) = self.attacks.iter().find(|a| {
                    a.prefix == Some(net) || a.ips.iter().any(|ip| IpNet::from(*ip) == net)
                }) {
                    return Who::Attacker(a.id);
                }
                self.populations
                    .get(&net)
                    .map_or(Who::Unknown, |p| Who::Benign(*p))
            };
        match key {
            ClientKey::Ip(ip) => by_net(identity_net(*ip)),
            ClientKey::IpPrefix(net) => match net {
                IpNet::V4(_) => by_net(*net),
                IpNet::V6(v6) if v6.prefix_len() <= 64 => {
                    // A /64 or wider: whoever owns the /64s inside it (the model gives
                    // each owner its own /64).
                    let first = identity_net(net.network());
                    by_net(first)
                }
                IpNet::V6(v6) => by_net(identity_net(IpAddr::V6(v6.network()))),
            },
            ClientKey::ApiKey(h) => {
                if let Some(a) = self
                    .attacks
                    .iter()
                    .find(|a| a.key.is_some_and(|k| api_key_hash(k) == *h))
                {
                    return Who::Attacker(a.id);
                }
                if *h == api_key_hash(WEB_KEY) || *h == api_key_hash(MOBILE_KEY) {
                    return Who::Benign(Population::SharedAppKey);
                }
                Who::Benign(Population::Partner)
            }
            _ => Who::Unknown,
        }
    }
}

/// The network the model identifies a client by: an IPv4 address as a /32, an IPv6 address
/// by its /64.
pub fn identity_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, 64).trunc()),
    }
}

/// One request of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimRequest {
    /// Offset from the start of the run, in nanoseconds of virtual time.
    pub offset_ns: i64,
    /// Client index.
    pub client: u32,
    /// Client IP.
    pub ip: IpAddr,
    /// Path (index into [`Traffic::path`]).
    pub path: u32,
    /// The status the app answers.
    pub status: u16,
    /// Response bytes.
    pub bytes: u64,
    /// Whether it is a token-endpoint call.
    pub token_endpoint: bool,
    /// User agent (index into [`Traffic::user_agent`]).
    pub ua: u16,
    /// The access token the request carries (client and session number), if the client
    /// has one.
    pub token: Option<(u32, u32)>,
    /// The attack it belongs to.
    pub attack: Option<u32>,
    /// The API key it carries (see [`api_key_hash`]).
    pub api_key: Option<u32>,
    /// Whether it is a retry of a request the app failed during an outage.
    pub retry: bool,
}

/// Which API key a client's requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyUse {
    /// The web key for browsers, the mobile key for app user agents.
    ByAgent,
    /// This one.
    Fixed(u32),
    /// None.
    Keyless,
}

/// An IPv6 device: its /64 and how it picks its address.
#[derive(Debug, Clone, Copy)]
struct V6Device {
    prefix: u128,
    seed: u64,
    /// Seconds an address lasts (0: a new one per request).
    every: i64,
    phase: i64,
}

struct Client {
    ip: IpAddr,
    uas: Vec<u16>,
    /// The listing page the client reads next (0-based), or the API scraper's next
    /// product id.
    next: u32,
    /// Successful token calls so far: the client's token is its number (0 = none yet).
    sessions: u32,
    v6: Option<V6Device>,
    key: KeyUse,
    aggressive: bool,
    /// A retry chain of this client is pending.
    retrying: bool,
    /// Retries sent so far.
    retries: u32,
}

impl Client {
    fn new(ip: IpAddr, uas: Vec<u16>) -> Self {
        Self {
            ip,
            uas,
            next: 0,
            sessions: 0,
            v6: None,
            key: KeyUse::ByAgent,
            aggressive: false,
            retrying: false,
            retries: 0,
        }
    }
}

/// A pending retry: when, who, what, which try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Retry {
    at_ns: i64,
    client: u32,
    path: u32,
    ua: u16,
    attempt: u32,
}

/// Mixes `x` (SplitMix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The request stream of one run (see the module docs).
pub struct Traffic {
    cfg: SimConfig,
    rng: Rng,
    clients: Vec<Client>,
    activity: Weighted,
    logins: Weighted,
    paths: Vec<PathSpec>,
    /// The shape of each path, as the sidecar computes it.
    shapes: Vec<Option<PathShape>>,
    path_pick: Weighted,
    uas: Vec<String>,
    ua_hashes: Vec<KeyHash>,
    truth: GroundTruth,
    /// Path indices of the attack-only paths.
    token: u32,
    login: u32,
    forbidden: Vec<u32>,
    videos: Vec<u32>,
    images: Vec<u32>,
    api_hot: Vec<u32>,
    /// The product listing, its pages, and the path of each product id (index `id − 1`).
    listing: u32,
    pages: Vec<u32>,
    products: Vec<u32>,
    health: u32,
    /// Client indices of the health checkers, and of each partner's servers.
    checkers: Vec<u32>,
    partners: Vec<Vec<u32>>,
    /// Outages as offsets from the start, in nanoseconds.
    outages_ns: Vec<(i64, i64)>,
    retries: BinaryHeap<Reverse<Retry>>,
    second: i64,
    seconds: i64,
    logins_per_sec: f64,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("seed", &self.cfg.seed)
            .field("second", &self.second)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

const UA_APPS: [&str; 6] = [
    "ShopApp/5.2 (iPhone; iOS 18.1)",
    "ShopApp/5.2 (Android 15; Pixel 8)",
    "okhttp/4.12.0",
    "Partner-Integration/2.0",
    "Mozilla/5.0 (compatible; MonitorBot/1.0)",
    "python-requests/2.32.3",
];

/// Browser user agents at the head of the catalog.
const BROWSERS: usize = 114;
/// The health checkers' user agent (catalog index).
const CHECKER_UA: u16 = (BROWSERS + UA_APPS.len()) as u16;
/// The partners' user agent.
const PARTNER_UA: u16 = (BROWSERS + 3) as u16;
/// The first mobile app variant.
const APP_FIRST: u16 = CHECKER_UA + 1;

fn ua_catalog() -> Vec<String> {
    let oses = [
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 14_6",
        "X11; Linux x86_64",
        "iPhone; CPU iPhone OS 18_1 like Mac OS X",
        "Linux; Android 15; SM-S921B",
    ];
    let mut out: Vec<String> = Vec::new();
    for v in 118..130 {
        for os in oses {
            out.push(format!(
                "Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
            ));
            out.push(format!(
                "Mozilla/5.0 ({os}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
            ));
        }
    }
    out.truncate(BROWSERS);
    out.extend(UA_APPS.iter().map(|s| (*s).to_owned()));
    out.push("ELB-HealthChecker/2.0".to_owned());
    let devices = [
        "iPhone; iOS 17.6",
        "iPhone; iOS 18.1",
        "iPhone; iOS 18.2",
        "iPad; iPadOS 18.1",
        "Android 13; SM-A546B",
        "Android 14; SM-S918B",
        "Android 14; Pixel 7",
        "Android 15; Pixel 8",
        "Android 15; SM-S921B",
        "Android 12; Redmi Note 11",
    ];
    for v in ["5.0", "5.1", "5.2", "5.3"] {
        for d in devices {
            out.push(format!("ShopApp/{v} ({d})"));
        }
    }
    debug_assert_eq!(out.len(), usize::from(APP_FIRST) + APP_VARIANTS);
    out
}

fn path_catalog(rng: &mut Rng) -> Vec<PathSpec> {
    let mut p = Vec::new();
    let mut add = |path: String, kind, median: f64| {
        p.push(PathSpec {
            path,
            kind,
            median_bytes: median,
        })
    };
    for id in 1..=500 {
        add(format!("/api/v1/products/{id}"), PathKind::Api, 2_500.0);
    }
    for q in [
        "shoes", "phone", "laptop", "coffee", "books", "lamp", "desk", "bag",
    ] {
        add(format!("/api/v1/search?q={q}"), PathKind::Api, 8_000.0);
    }
    for path in [
        "/api/v1/products",
        "/api/v1/cart",
        "/api/v1/orders",
        "/api/v1/users/me",
        "/api/v1/recommendations",
    ] {
        add(path.to_owned(), PathKind::Api, 4_000.0);
    }
    for n in 1..=400 {
        add(format!("/static/img/{n}.jpg"), PathKind::Static, 120_000.0);
    }
    for f in ["app.js", "vendor.js", "app.css", "fonts.css", "logo.svg"] {
        add(format!("/static/{f}"), PathKind::Static, 60_000.0);
    }
    // Zipf popularity over a shuffled order, so that kinds mix along the ranks.
    for i in (1..p.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    // Videos are the long tail: rarely watched by ordinary users.
    for n in 1..=20 {
        p.push(PathSpec {
            path: format!("/static/video/{n}.mp4"),
            kind: PathKind::Video,
            median_bytes: 3_000_000.0,
        });
    }
    p
}

impl Traffic {
    /// The traffic of `cfg`, with its ground truth drawn up front.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let mut paths = path_catalog(&mut rng);
        let path_pick = Weighted::zipf(paths.len(), cfg.path_zipf);
        let mut add = |path: &str, kind, median: f64| {
            paths.push(PathSpec {
                path: path.to_owned(),
                kind,
                median_bytes: median,
            });
            (paths.len() - 1) as u32
        };
        let token = add(TOKEN_PATH, PathKind::Token, 1_200.0);
        let health = add("/healthz", PathKind::Health, 40.0);
        let login = add("/api/v1/login", PathKind::Login, 300.0);
        let forbidden = [
            "/admin",
            "/admin/users",
            "/admin/config",
            "/internal/metrics",
            "/internal/debug/pprof",
            "/debug/vars",
            "/.git/config",
            "/wp-admin/",
        ]
        .iter()
        .map(|p| add(p, PathKind::Forbidden, 200.0))
        .collect();
        let pages: Vec<u32> = (1..=LISTING_PAGES)
            .map(|n| {
                add(
                    &format!("/api/v1/products?page={n}"),
                    PathKind::Api,
                    4_000.0,
                )
            })
            .collect();
        let mut products = vec![0u32; CATALOG_PRODUCTS as usize];
        for id in (CATALOG_PRODUCTS + 1)..=SCRAPED_PRODUCTS {
            products.push(add(
                &format!("/api/v1/products/{id}"),
                PathKind::Api,
                2_500.0,
            ));
        }
        for (i, p) in paths.iter().enumerate() {
            if let Some(id) = p.path.strip_prefix("/api/v1/products/")
                && let Ok(id) = id.parse::<usize>()
                && id <= CATALOG_PRODUCTS as usize
            {
                products[id - 1] = i as u32;
            }
        }
        let listing = paths
            .iter()
            .position(|p| p.path == "/api/v1/products")
            .unwrap_or(0) as u32;
        let shapes = paths
            .iter()
            .map(|p| match p.path.split_once('?') {
                Some((path, query)) => PathShape::of(path, Some(query)),
                None => PathShape::of(&p.path, None),
            })
            .collect();
        let kind_of = |paths: &[PathSpec], k: PathKind| -> Vec<u32> {
            (0..paths.len() as u32)
                .filter(|i| paths[*i as usize].kind == k)
                .collect()
        };
        let videos = kind_of(&paths, PathKind::Video);
        let images = kind_of(&paths, PathKind::Static);
        let api_hot: Vec<u32> = kind_of(&paths, PathKind::Api)
            .into_iter()
            .filter(|i| paths[*i as usize].path.contains("search"))
            .collect();
        let uas = ua_catalog();
        let ua_hashes = uas.iter().map(|u| KeyHash::of(u.as_bytes())).collect();
        // Browsers by popularity; the app user agents are picked explicitly.
        let ua_pick = Weighted::zipf(BROWSERS, 1.0);
        let ip_of = |i: u32| IpAddr::V4(Ipv4Addr::from(u32::from(cfg.ip_base) + i));

        let mut clients = Vec::new();
        let mut weights = Vec::new();
        let mut users = Vec::new();
        let zipf = |rank: u32| f64::from(rank).powf(-cfg.client_zipf);
        let mut truth = GroundTruth::default();
        for i in 0..cfg.clients {
            let mut uas = vec![ua_pick.sample(&mut rng) as u16];
            if rng.chance(0.1) {
                // A phone app next to the browser.
                uas.push(ua_catalog_app_index(&mut rng));
            }
            clients.push(Client::new(ip_of(i), uas));
            truth.benign.push(ip_of(i));
            weights.push(zipf(i + 1));
            users.push(1.0);
        }
        let mean_weight = weights.iter().sum::<f64>() / f64::from(cfg.clients.max(1));
        for j in 0..cfg.nat_clients {
            let i = cfg.clients + j;
            let (lo, hi) = cfg.nat_users;
            let n = lo + rng.below(u64::from(hi.saturating_sub(lo).max(1))) as u32;
            let uas = (0..n.min(24))
                .map(|_| ua_pick.sample(&mut rng) as u16)
                .collect();
            clients.push(Client::new(ip_of(i), uas));
            truth.nat.push(ip_of(i));
            // Office users are busier than the average single IP.
            weights.push(f64::from(n) * mean_weight * 1.5);
            users.push(f64::from(n));
        }
        for ip in &truth.benign {
            truth
                .populations
                .insert(IpNet::from(*ip), Population::SingleUser);
        }
        for ip in &truth.nat {
            truth
                .populations
                .insert(IpNet::from(*ip), Population::Office);
        }
        // The populations that look like abuse draw from their own generator, so that the
        // default model's traffic stays what it was for a seed.
        let mut pop = Rng::new(cfg.seed ^ 0x005E_ED0F_9090);
        for _ in 0..cfg.cgnat_carriers {
            let per = f64::from(cfg.cgnat_users) / f64::from(cfg.cgnat_addresses.max(1));
            for _ in 0..cfg.cgnat_addresses {
                let ip = ip_of(clients.len() as u32);
                let uas = (0..(per.ceil() as u32).clamp(1, 24))
                    .map(|_| APP_FIRST + pop.below(APP_VARIANTS as u64) as u16)
                    .collect();
                clients.push(Client::new(ip, uas));
                truth
                    .populations
                    .insert(IpNet::from(ip), Population::MobileCarrier);
                weights.push(per * mean_weight);
                users.push(per);
            }
        }
        for h in 0..cfg.ipv6_households {
            // 2001:db8:1000:h::/64
            let prefix = 0x2001_0db8_u128 << 96 | u128::from(0x1000_0000 + h) << 64;
            let net = IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(prefix), 64));
            truth.populations.insert(net, Population::Ipv6Household);
            for _ in 0..1 + pop.below(4) {
                let mut c = Client::new(
                    IpAddr::V6(Ipv6Addr::from(prefix)),
                    vec![ua_pick.sample(&mut pop) as u16],
                );
                c.v6 = Some(V6Device {
                    prefix,
                    seed: pop.next_u64(),
                    every: if pop.chance(0.1) { 3600 } else { 86_400 },
                    phase: pop.below(86_400) as i64,
                });
                clients.push(c);
                // As busy as a single user of a random rank.
                weights.push(zipf(1 + pop.below(u64::from(cfg.clients.max(1))) as u32));
                users.push(1.0);
            }
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let draw = (mix(cfg.seed ^ (i as u64) << 20) >> 11) as f64 / (1u64 << 53) as f64;
            c.aggressive = draw < cfg.aggressive_retriers;
        }
        let total_users: f64 = users.iter().sum();
        let activity = Weighted::new(weights);
        let logins = Weighted::new(users);
        // Clients outside the activity sampling (they keep their own pace).
        let mut partners = Vec::new();
        for j in 0..cfg.partners {
            let servers = (0..2)
                .map(|_| {
                    let i = clients.len() as u32;
                    let mut c = Client::new(ip_of(i), vec![PARTNER_UA]);
                    c.key = KeyUse::Fixed(PARTNER_KEY + j);
                    truth
                        .populations
                        .insert(IpNet::from(ip_of(i)), Population::Partner);
                    clients.push(c);
                    i
                })
                .collect();
            partners.push(servers);
        }
        let mut checkers = Vec::new();
        for _ in 0..cfg.health_checkers {
            let i = clients.len() as u32;
            let mut c = Client::new(ip_of(i), vec![CHECKER_UA]);
            c.key = KeyUse::Keyless;
            truth
                .populations
                .insert(IpNet::from(ip_of(i)), Population::HealthChecker);
            clients.push(c);
            checkers.push(i);
        }
        let seconds_total = cfg.duration.as_secs().max(1);
        let mut outages_ns = Vec::new();
        let midnight = cfg.start.as_second().rem_euclid(86_400);
        for day in 0..=seconds_total / 86_400 {
            for _ in 0..cfg.outages_per_day {
                let from = day * 86_400 - midnight + 8 * 3600 + pop.below(12 * 3600 - 900) as i64;
                let len = pop.range(300.0, 900.0) as i64;
                if from >= 0 && from < seconds_total {
                    let at = |s: i64| cfg.start + SignedDuration::from_secs(s);
                    truth
                        .outages
                        .push((at(from), at((from + len).min(seconds_total))));
                    outages_ns.push((from * 1_000_000_000, (from + len) * 1_000_000_000));
                }
            }
        }
        let seconds = cfg.duration.as_secs().max(1);
        let mut me = Self {
            logins_per_sec: total_users * cfg.logins_per_user_day / 86_400.0,
            cfg,
            rng,
            clients,
            activity,
            logins,
            paths,
            shapes,
            path_pick,
            uas,
            ua_hashes,
            truth,
            token,
            login,
            forbidden,
            videos,
            images,
            api_hot,
            listing,
            pages,
            products,
            health,
            checkers,
            partners,
            outages_ns,
            retries: BinaryHeap::new(),
            second: 0,
            seconds,
        };
        me.plan_attacks();
        me
    }

    fn plan_attacks(&mut self) {
        let kinds = self.cfg.scenarios.clone();
        let per = self.cfg.attacks_per_kind.max(1);
        let slots = kinds.len() as u32 * per;
        if slots == 0 {
            return;
        }
        let warmup = self
            .cfg
            .warmup
            .as_secs_f64()
            .clamp(0.0, self.seconds as f64 - 1.0);
        let span = (self.seconds as f64 - warmup) / f64::from(slots);
        let mut unseen_exits = Vec::new();
        let mut slot = 0u32;
        for _ in 0..per {
            for scenario in &kinds {
                let r = &mut self.rng;
                let begin = warmup + span * f64::from(slot) + span * r.range(0.05, 0.3);
                slot += 1;
                let (ips, rate, mins, ua) = match scenario {
                    Scenario::Flooder => (1, r.range(3.0, 15.0), r.range(5.0, 30.0), 119),
                    Scenario::StaticContentScraper => {
                        (1, r.range(0.5, 2.0), r.range(10.0, 40.0), 118)
                    }
                    Scenario::BruteGuessor => (1, r.range(0.1, 1.0), r.range(30.0, 120.0), 119),
                    Scenario::RobotAbuser => (1, r.range(0.3, 2.0), r.range(20.0, 90.0), 118),
                    Scenario::OAuthAbuser => {
                        (1, 1.0 / r.range(5.0, 30.0), r.range(60.0, 240.0), 116)
                    }
                    Scenario::TorList => (3, r.range(0.02, 0.2), r.range(10.0, 60.0), 3),
                    Scenario::ApiScraper => (1, r.range(0.3, 2.0), r.range(30.0, 120.0), 119),
                    Scenario::RotatingFlooder => (1, r.range(3.0, 15.0), r.range(5.0, 30.0), 119),
                    Scenario::KeyGuessor => {
                        (200, r.range(0.2, 1.0) / 200.0, r.range(30.0, 120.0), 116)
                    }
                    Scenario::LowAndSlow => {
                        (1, 1.0 / r.range(20.0, 60.0), r.range(120.0, 240.0), 2)
                    }
                };
                let rate = self.cfg.attack_rate.unwrap_or(rate);
                let length = self
                    .cfg
                    .attack_duration
                    .map_or(mins * 60.0, |d| d.as_secs_f64());
                let end = (begin + length).min(warmup + span * f64::from(slot) - 1.0);
                let first = self.clients.len() as u32;
                let id = self.truth.attacks.len() as u32;
                let mut attack_ips = Vec::new();
                let mut ids = Vec::new();
                let mut prefix = None;
                let key = (*scenario == Scenario::KeyGuessor).then_some(ATTACK_KEY + id);
                for i in 0..ips {
                    let ip = IpAddr::V4(Ipv4Addr::from(u32::from(self.cfg.ip_base) + first + i));
                    let next = match scenario {
                        Scenario::ApiScraper => self.rng.below(u64::from(CATALOG_PRODUCTS)) as u32,
                        _ => 0,
                    };
                    let mut c = Client::new(ip, vec![ua]);
                    c.next = next;
                    if let Some(k) = key {
                        c.key = KeyUse::Fixed(k);
                    }
                    if *scenario == Scenario::RotatingFlooder {
                        // 2001:db8:dead:<attack>::/64, a new address per request.
                        let bits = 0x2001_0db8_dead_u128 << 80 | u128::from(id) << 64;
                        prefix = Some(IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(bits), 64)));
                        c.ip = IpAddr::V6(Ipv6Addr::from(bits));
                        c.v6 = Some(V6Device {
                            prefix: bits,
                            seed: u64::from(id),
                            every: 0,
                            phase: 0,
                        });
                    } else {
                        attack_ips.push(ip);
                    }
                    self.clients.push(c);
                    ids.push(first + i);
                }
                if *scenario == Scenario::TorList {
                    self.truth.tor_exits.extend(&attack_ips);
                }
                let at = |s: f64| self.cfg.start + SignedDuration::from_millis((s * 1000.0) as i64);
                self.truth.attacks.push(Attack {
                    id,
                    scenario: *scenario,
                    clients: ids,
                    ips: attack_ips,
                    prefix,
                    key,
                    start: at(begin),
                    end: at(end),
                    rate,
                    ua,
                });
            }
        }
        if kinds.contains(&Scenario::TorList) {
            // Exits in the list that never show up (addresses outside the client space).
            for i in 0..50u32 {
                unseen_exits.push(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i))); // 198.18.0.0/15
            }
        }
        self.truth.tor_exits.extend(unseen_exits);
    }

    /// The ground truth of the run.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The text of path `i`.
    pub fn path(&self, i: u32) -> &str {
        &self.paths[i as usize].path
    }

    /// The shape of path `i` (see [`crate::sequence`]).
    pub fn shape(&self, i: u32) -> Option<PathShape> {
        self.shapes[i as usize]
    }

    /// The text of user agent `i`.
    pub fn user_agent(&self, i: u16) -> &str {
        &self.uas[usize::from(i)]
    }

    /// The SHA-256 of user agent `i` (as the sidecar hashes it).
    pub fn user_agent_hash(&self, i: u16) -> KeyHash {
        self.ua_hashes[usize::from(i)]
    }

    /// Number of client indices (benign, NAT and attackers).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Virtual time of the start of the next second.
    pub fn now(&self) -> Timestamp {
        self.cfg.start + SignedDuration::from_secs(self.second)
    }

    /// Benign requests per second expected at `offset` seconds into the run (diurnal).
    pub fn benign_rate(&self, offset: f64) -> f64 {
        let day = self.cfg.start.as_second().rem_euclid(86_400) as f64 + offset;
        let hour = (day / 3600.0) % 24.0;
        self.cfg.base_rate * (1.0 + 0.6 * (std::f64::consts::TAU * (hour - 8.0) / 24.0).sin())
    }

    /// The requests of the next virtual second, in time order; `None` at the end of the run.
    pub fn next_second(&mut self) -> Option<Vec<SimRequest>> {
        if self.second >= self.seconds {
            return None;
        }
        let sec = self.second;
        self.second += 1;
        let base_ns = sec * 1_000_000_000;
        let mut out = Vec::new();
        self.due_retries(base_ns + 1_000_000_000, &mut out);
        let every = self.cfg.health_every.as_secs().max(1);
        for j in 0..self.checkers.len() {
            if (sec + 2 * j as i64) % every == 0 {
                let at = base_ns + j as i64 * 100_000_000;
                let client = self.checkers[j];
                out.push(self.request(at, client, self.health, 200, CHECKER_UA, None));
            }
        }
        for j in 0..self.partners.len() {
            let servers = self.partners[j].clone();
            for _ in 0..self.rng.poisson(self.cfg.partner_rate) {
                let client = servers[self.rng.below(servers.len() as u64) as usize];
                let path = self.path_pick.sample(&mut self.rng) as u32;
                let at = base_ns + self.rng.below(1_000_000_000) as i64;
                out.push(self.benign_request(at, client, path, PARTNER_UA));
            }
            if sec % 3600 == (j as i64 * 600) % 3600 {
                let at = base_ns + 500_000_000;
                out.push(self.request(at, servers[0], self.token, 200, PARTNER_UA, None));
            }
        }
        let n = self.rng.poisson(self.benign_rate(sec as f64 + 0.5));
        for _ in 0..n {
            let client = self.activity.sample(&mut self.rng) as u32;
            let path = self.path_pick.sample(&mut self.rng) as u32;
            let at = base_ns + self.rng.below(1_000_000_000) as i64;
            let ua = self.client_ua(client);
            out.push(self.benign_request(at, client, path, ua));
        }
        let logins = self
            .rng
            .poisson(self.logins_per_sec * self.benign_rate(sec as f64) / self.cfg.base_rate);
        for _ in 0..logins {
            let client = self.logins.sample(&mut self.rng) as u32;
            let at = base_ns + self.rng.below(1_000_000_000) as i64;
            let ua = self.client_ua(client);
            let status = if self.rng.chance(0.03) { 401 } else { 200 };
            out.push(self.request(at, client, self.token, status, ua, None));
        }
        let now = self.cfg.start + SignedDuration::from_secs(sec);
        for a in 0..self.truth.attacks.len() {
            let attack = &self.truth.attacks[a];
            if now < attack.start - SignedDuration::from_secs(1) || now >= attack.end {
                continue;
            }
            let (scenario, rate, ua) = (attack.scenario, attack.rate, attack.ua);
            let start_ns = attack.start.duration_since(self.cfg.start).as_nanos() as i64;
            let end_ns = attack.end.duration_since(self.cfg.start).as_nanos() as i64;
            for client in attack.clients.clone() {
                for _ in 0..self.rng.poisson(rate) {
                    let at = base_ns + self.rng.below(1_000_000_000) as i64;
                    if at < start_ns || at >= end_ns {
                        continue;
                    }
                    let r = self.attack_request(scenario, at, client, ua, a as u32);
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.offset_ns);
        Some(out)
    }

    /// Whether the app is down at `at_ns` (offset from the start).
    fn in_outage(&self, at_ns: i64) -> bool {
        self.outages_ns
            .iter()
            .any(|(a, b)| at_ns >= *a && at_ns < *b)
    }

    /// Sends the retries due before `end_ns` and schedules the next tries of those that
    /// fail again.
    fn due_retries(&mut self, end_ns: i64, out: &mut Vec<SimRequest>) {
        while let Some(Reverse(r)) = self.retries.peek().copied() {
            if r.at_ns >= end_ns {
                break;
            }
            self.retries.pop();
            let mut req = self.request(r.at_ns, r.client, r.path, 200, r.ua, None);
            req.retry = true;
            let aggressive = self.clients[r.client as usize].aggressive;
            self.clients[r.client as usize].retries += 1;
            let again = match (req.status == 503, aggressive) {
                (false, _) => None,
                (true, true) if r.attempt < 3600 => Some(self.rng.range(0.9, 1.1)),
                (true, false) if r.attempt < 6 => {
                    Some(f64::from(1u32 << r.attempt) * self.rng.range(0.5, 1.5))
                }
                (true, _) => None,
            };
            match again {
                Some(delay) => self.retries.push(Reverse(Retry {
                    at_ns: r.at_ns + (delay * 1e9) as i64,
                    attempt: r.attempt + 1,
                    ..r
                })),
                None => self.clients[r.client as usize].retrying = false,
            }
            out.push(req);
        }
    }

    /// Client `i`'s address at `at_ns` (an IPv6 device's privacy address changes).
    fn ip_at(&mut self, client: u32, at_ns: i64) -> IpAddr {
        let c = &self.clients[client as usize];
        let Some(d) = c.v6 else {
            return c.ip;
        };
        let iid = if d.every == 0 {
            self.rng.next_u64()
        } else {
            mix(d.seed ^ ((at_ns / 1_000_000_000 + d.phase) / d.every) as u64)
        };
        IpAddr::V6(Ipv6Addr::from(d.prefix | u128::from(iid)))
    }

    /// How many retries client `i` sent (the retry storm's measure).
    pub fn retries_of(&self, client: u32) -> u32 {
        self.clients[client as usize].retries
    }

    /// Whether client `i` retries every second.
    pub fn is_aggressive(&self, client: u32) -> bool {
        self.clients[client as usize].aggressive
    }

    /// The network the model identifies client `i` by (see [`identity_net`]).
    pub fn identity(&self, client: u32) -> IpNet {
        let c = &self.clients[client as usize];
        match c.v6 {
            Some(d) => identity_net(IpAddr::V6(Ipv6Addr::from(d.prefix))),
            None => identity_net(c.ip),
        }
    }

    fn client_ua(&mut self, client: u32) -> u16 {
        let uas = &self.clients[client as usize].uas;
        uas[self.rng.below(uas.len() as u64) as usize]
    }

    fn benign_request(&mut self, at: i64, client: u32, mut path: u32, ua: u16) -> SimRequest {
        if path == self.listing {
            let c = &mut self.clients[client as usize];
            path = self.pages[c.next as usize % self.pages.len()];
            c.next = c.next.wrapping_add(1);
        }
        let kind = self.paths[path as usize].kind;
        let x = self.rng.f64();
        let status = match kind {
            PathKind::Api => match x {
                x if x < 0.015 => 404,
                x if x < 0.020 => 400,
                x if x < 0.025 => 401,
                x if x < 0.027 => 403,
                x if x < 0.030 => 503,
                _ => 200,
            },
            _ if x < 0.005 => 404,
            _ => 200,
        };
        self.request(at, client, path, status, ua, None)
    }

    fn attack_request(
        &mut self,
        scenario: Scenario,
        at: i64,
        client: u32,
        ua: u16,
        attack: u32,
    ) -> SimRequest {
        let r = &mut self.rng;
        let pick = |r: &mut Rng, v: &[u32]| v[r.below(v.len() as u64) as usize];
        let (path, status) = match scenario {
            Scenario::Flooder | Scenario::RotatingFlooder => (pick(r, &self.api_hot), 200),
            Scenario::StaticContentScraper => {
                if r.chance(0.5) {
                    (pick(r, &self.videos), 200)
                } else {
                    (pick(r, &self.images), 200)
                }
            }
            Scenario::BruteGuessor | Scenario::KeyGuessor | Scenario::LowAndSlow => {
                (self.login, if r.chance(0.95) { 401 } else { 200 })
            }
            Scenario::RobotAbuser => {
                if r.chance(0.55) {
                    (pick(r, &self.forbidden), 403)
                } else {
                    (self.path_pick.sample(r) as u32, 200)
                }
            }
            Scenario::OAuthAbuser => {
                if r.chance(0.8) {
                    (self.token, 200)
                } else {
                    (pick(r, &self.api_hot), 200)
                }
            }
            Scenario::TorList => {
                let p = self.path_pick.sample(r) as u32;
                return self.benign_request_as(at, client, p, ua, attack);
            }
            Scenario::ApiScraper => {
                if r.chance(0.03) {
                    (pick(r, &self.api_hot), 200)
                } else {
                    let c = &mut self.clients[client as usize];
                    let id = c.next as usize % self.products.len();
                    c.next = c.next.wrapping_add(1);
                    (self.products[id], 200)
                }
            }
        };
        self.request(at, client, path, status, ua, Some(attack))
    }

    fn benign_request_as(
        &mut self,
        at: i64,
        client: u32,
        path: u32,
        ua: u16,
        attack: u32,
    ) -> SimRequest {
        let mut r = self.benign_request(at, client, path, ua);
        r.attack = Some(attack);
        r
    }

    fn request(
        &mut self,
        at: i64,
        client: u32,
        path: u32,
        status: u16,
        ua: u16,
        attack: Option<u32>,
    ) -> SimRequest {
        let failed = !self.outages_ns.is_empty() && self.in_outage(at);
        let status = if failed { 503 } else { status };
        let ip = self.ip_at(client, at);
        let spec = &self.paths[path as usize];
        let bytes = match (status, spec.kind) {
            (200, PathKind::Video) => self.rng.range(1_000_000.0, 6_000_000.0),
            (200, _) => self.rng.lognormal(spec.median_bytes, 0.6),
            _ => self.rng.lognormal(250.0, 0.3),
        } as u64;
        let c = &mut self.clients[client as usize];
        if spec.kind == PathKind::Token && status == 200 {
            c.sessions += 1;
        }
        let token =
            (c.sessions > 0 && spec.kind != PathKind::Token).then_some((client, c.sessions));
        let api_key = match c.key {
            KeyUse::ByAgent if usize::from(ua) >= BROWSERS => Some(MOBILE_KEY),
            KeyUse::ByAgent => Some(WEB_KEY),
            KeyUse::Fixed(k) => Some(k),
            KeyUse::Keyless => None,
        };
        let token_endpoint = spec.kind == PathKind::Token;
        if failed && attack.is_none() && !c.retrying && c.key != KeyUse::Keyless {
            c.retrying = true;
            let delay = if c.aggressive {
                1.0
            } else {
                self.rng.range(0.5, 1.5)
            };
            self.retries.push(Reverse(Retry {
                at_ns: at + (delay * 1e9) as i64,
                client,
                path,
                ua,
                attempt: 1,
            }));
        }
        SimRequest {
            token,
            offset_ns: at,
            client,
            ip,
            path,
            status,
            bytes,
            token_endpoint,
            ua,
            attack,
            api_key,
            retry: false,
        }
    }
}

/// Products of the catalog (`/api/v1/products/1` to `/500`, with Zipf popularity).
const CATALOG_PRODUCTS: u32 = 500;
/// Product ids an API scraper can walk (the ones past the catalog are never asked for by
/// benign clients: the long tail).
const SCRAPED_PRODUCTS: u32 = 16_000;
/// Pages of the product listing.
const LISTING_PAGES: u32 = 50;

/// Index of one of the first three app user agents (phone apps, HTTP library).
fn ua_catalog_app_index(rng: &mut Rng) -> u16 {
    (114 + rng.below(3)) as u16
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
