//! What the operator costs the API server: the leader evaluates every namespace's
//! DetectionRules each `--detection-interval` (here 1 s) from the operator's one watch of the
//! rules, never with a LIST per namespace and tick; a SecurityAction applied costs the writes
//! it causes and no LIST (the policy controller reads from the same watches). Measured with the operator's own count of its API
//! requests (`palisade_operator_kube_requests_total`), so that nothing else talking to the
//! API server (kube-controller-manager, other tests) and no scheduling delay changes the
//! verdict. The leader also exports what the windows hold and how long a round takes.

use palisade_e2e::collector::{flood_report, has_incident, metric_sum, post, token};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

/// What the operator's collector has asked the API server about DetectionRules, and how many
/// evaluation rounds it has run, from the operator's own metrics.
#[derive(Debug, Clone, Copy)]
struct Calls {
    lists: u64,
    watches: u64,
    rounds: u64,
}

fn calls(op: &Operator) -> Calls {
    let m = op.metrics().expect("operator metrics");
    let requests = |verb: &str| {
        metric_sum(
            &m,
            "palisade_operator_kube_requests_total{",
            &format!("verb=\"{verb}\",resource=\"detectionrules\""),
        )
    };
    Calls {
        lists: requests("list"),
        watches: requests("watch"),
        rounds: metric_sum(
            &m,
            "palisade_operator_collector_evaluation_seconds_count",
            "",
        ),
    }
}

#[tokio::test]
async fn the_leader_evaluates_rules_from_its_watch_without_listing_them_each_tick() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "apiload").await;
    // The harness runs operators with `--detection-interval 1s`.
    let op = Operator::start(cp, "op-apiload", "op-apiload", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");
    let c = &op.collector;
    // The rule is evaluated: a reported flood opens an incident.
    eventually("a reported flood to open an incident", || async {
        let (code, msg) = post(c, &tok, flood_report(ns.name(), 2000).to_json()).await;
        if code != 202 {
            return Err(format!("report: {code} {msg}"));
        }
        has_incident(cp, ns.name())
    })
    .await;

    // Five more evaluation rounds with reports coming in, however long a busy machine takes
    // to run them. The operator counts its own API requests per component: the API server's
    // counter would also see kube-controller-manager (its garbage collector and quota
    // controller list every resource they discover) and the policy controller (which lists a
    // namespace's rules when it reconciles it: whenever a rule's status or the detected set
    // changes, at no fixed tick). A watcher may relist (a watch that expired or lost its
    // resource version): legitimate, and always followed by a new WATCH. A LIST per tick would
    // not be: so every collector LIST in the window must be paired with a WATCH.
    let before = calls(&op);
    eventually("five evaluation rounds with reports coming in", || async {
        let (code, msg) = post(c, &tok, flood_report(ns.name(), 2000).to_json()).await;
        if code != 202 {
            return Err(format!("report: {code} {msg}"));
        }
        let now = calls(&op);
        match now.rounds - before.rounds {
            n if n >= 5 => Ok(()),
            n => Err(format!("{n} rounds so far")),
        }
    })
    .await;
    let after = eventually("every DetectionRule LIST to be a watcher's", || async {
        let now = calls(&op);
        let (lists, watches) = (now.lists - before.lists, now.watches - before.watches);
        if lists <= watches {
            Ok(now)
        } else {
            Err(format!(
                "{lists} LISTs but {watches} WATCHes of DetectionRules in {} evaluation rounds \
                 of one namespace: something lists outside the watch",
                now.rounds - before.rounds
            ))
        }
    })
    .await;
    eprintln!("DetectionRule requests in the window: {before:?} -> {after:?}");
    assert!(
        before.lists >= 1 && before.watches >= 1,
        "the request counter saw the shared watch's first LIST and WATCH: {before:?}"
    );

    // What it costs the leader is exported: the windows' memory and the rounds' time.
    let metrics = op.metrics().expect("operator metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("palisade_operator_collector_window_bytes") > 0.0,
        "the windows of {} take memory",
        ns.name()
    );
}

/// Bad tokens do not each cost the API server a TokenReview: a refused token is reviewed once
/// and its answer reused (for 10 s), a bearer value that is not a JWT is never reviewed, and
/// a good token is reviewed once for many reports.
#[tokio::test]
async fn bad_tokens_cost_one_token_review_not_one_per_report() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "tokenreviews").await;
    let op = Operator::start(cp, "op-tokenreviews", "op-tokenreviews", &scope(&ns));
    let c = &op.collector;
    let reviews = || {
        let m = op.metrics().expect("operator metrics");
        metric_sum(
            &m,
            "palisade_operator_kube_requests_total{",
            "resource=\"tokenreviews\"",
        )
    };
    let body = || flood_report(ns.name(), 10).to_json();
    // A real token of the namespace, for the API server's audience, not `palisade`.
    let wrong_audience = token(
        cp,
        ns.name(),
        "https://kubernetes.default.svc.cluster.local",
    );
    let wrong_audience = wrong_audience.as_str();
    let (code, msg) = eventually("the collector to answer", || async {
        let (code, msg) = post(c, wrong_audience, body()).await;
        (code == 401)
            .then_some((code, msg.clone()))
            .ok_or(format!("{code} {msg}"))
    })
    .await;
    assert_eq!(code, 401, "{msg}");
    let before = reviews();
    assert!(before >= 1, "the first refusal was reviewed");
    for _ in 0..20 {
        let (code, msg) = post(c, wrong_audience, body()).await;
        assert_eq!(code, 401, "{msg}");
        let (code, msg) = post(c, "not-a-token", body()).await;
        assert_eq!(code, 401, "{msg}");
        assert!(msg.contains("not a service-account token"), "{msg}");
    }
    let after_bad = reviews();
    assert!(
        after_bad - before <= 1,
        "40 refused reports cost {} reviews (one more only if the 10 s answer lapsed)",
        after_bad - before
    );
    let good = token(cp, ns.name(), "palisade");
    // The first answers may be 503 while the new leader restores its state; the token was
    // reviewed for the first of them all the same.
    eventually("the leader to accept reports", || async {
        let (code, msg) = post(c, &good, body()).await;
        (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
    for _ in 0..20 {
        let (code, msg) = post(c, &good, body()).await;
        assert_eq!(code, 202, "{msg}");
    }
    let after_good = reviews() - after_bad;
    assert_eq!(after_good, 1, "20 reports with one good token: one review");
}

/// POSTs `body` to `url` over HTTPS without verifying the certificate; returns the status.
fn curl_post_https(url: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("curl")
        .args(["-sSk", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        // HTTP/1.1 with `Expect: 100-continue`, waiting for the answer: over HTTP/2 the
        // server's early 413 resets a stream whose body curl is still sending, and curl then
        // reports a framing error (92) instead of the answer, depending on timing.
        .args(["--http1.1", "--expect100-timeout", "60"])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            url,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    if let Some(mut stdin) = child.stdin.take() {
        // The server may refuse before reading it all.
        let _ = stdin.write_all(body);
    }
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let err = String::from_utf8_lossy(&out.stderr);
    (code.trim().parse().unwrap_or(0), format!("{body}{err}"))
}

/// Opens a TCP connection to `to` from source address `from`.
async fn connect(from: &str, to: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    sock.connect(to.parse().expect("collector address"))
        .await
        .expect("connect")
}

/// Whether the server closed `conn` (reads end of stream), waiting at most the patience.
async fn closed_by_server(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(palisade_e2e::patience(), conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Slow and greedy clients cannot hold the operator's servers (the collector here; the
/// webhook shares the same server): one address holds at most 32 connections (the next is
/// closed at once), a connection that never starts a request (no TLS handshake on the webhook
/// port, headers that never end) is closed after 10 s, the webhook refuses a 4 MiB body, a
/// request
/// whose body never comes is answered 408 after 30 s, and reports from others are answered
/// all along, with the operator's memory far below the chart's limit (~290 connections held,
/// 31 of them announcing 4 MB bodies).
#[tokio::test]
async fn slow_and_greedy_clients_cannot_hold_the_collector() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "slowclients").await;
    let op = Operator::start(cp, "op-slowclients", "op-slowclients", &scope(&ns));
    let c = op.collector.clone();
    let good = token(cp, ns.name(), "palisade");
    eventually("the collector to accept a report", || async {
        let (code, msg) = post(&c, &good, flood_report(ns.name(), 10).to_json()).await;
        (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(connect("127.0.8.1", &c).await);
    }
    let mut extra = connect("127.0.8.1", &c).await;
    assert!(
        closed_by_server(&mut extra).await,
        "the 33rd connection of one address is closed"
    );
    // Another address is served meanwhile, and so is a slow body's neighbour.
    let mut slow = connect("127.0.8.2", &c).await;
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer {good}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    let (code, msg) = post(&c, &good, flood_report(ns.name(), 10).to_json()).await;
    assert_eq!(
        code, 202,
        "a report while 32 idle connections are held: {msg}"
    );
    // Many more from other addresses: 7 × 32 idle, and 31 reports announcing 4 MB that
    // never send it.
    let mut crowd = Vec::new();
    for host in 3..10 {
        for _ in 0..32 {
            crowd.push(connect(&format!("127.0.8.{host}"), &c).await);
        }
    }
    let big = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer {good}\r\n\
         Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{"
    );
    for _ in 0..31 {
        let mut conn = connect("127.0.8.2", &c).await;
        conn.write_all(big.as_bytes()).await.expect("head");
        crowd.push(conn);
    }
    let (code, msg) = post(&c, &good, flood_report(ns.name(), 10).to_json()).await;
    assert_eq!(code, 202, "a report while ~290 connections are held: {msg}");
    // The chart's memory limit is 512 MiB; this is far below it.
    let rss = op.rss_bytes().expect("the operator's RSS");
    assert!(rss < 256 << 20, "operator RSS {} MiB", rss >> 20);
    // Headers that never end, and the webhook's TLS port with no handshake: closed too.
    let mut trickle = connect("127.0.8.10", &c).await;
    trickle
        .write_all(b"POST /v1/reports HTTP/1.1\r\nHost: collector\r\n")
        .await
        .expect("part of a head");
    let mut no_tls = connect("127.0.8.10", &op.webhook).await;
    // The idle ones are closed by the server (after 10 s).
    for conn in idle.iter_mut().chain([&mut trickle, &mut no_tls]) {
        assert!(closed_by_server(conn).await, "an idle connection is closed");
    }
    // The webhook reads at most 3 MiB: a larger admission request is refused unread.
    let big = vec![b'x'; 4 << 20];
    let (code, msg) = curl_post_https(&format!("https://{}/mutate", op.webhook), &big);
    assert_eq!(code, 413, "a 4 MiB body to the webhook: {msg}");
    // Up to 3 MiB is read (the API server may send that much): answered, not refused.
    let (code, msg) = curl_post_https(
        &format!("https://{}/mutate", op.webhook),
        &vec![b' '; 5 << 19],
    );
    assert!(code != 413 && code != 0, "a 2.5 MiB body: {code} {msg}");
    // The body that never comes: 408 (after 30 s).
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(palisade_e2e::patience() * 2, slow.read(&mut answer))
        .await
        .expect("an answer to the slow body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Every request the operator has sent, by (component, verb, resource), from its own counter.
fn requests(op: &Operator) -> std::collections::BTreeMap<(String, String, String), u64> {
    let m = op.metrics().expect("operator metrics");
    let mut out = std::collections::BTreeMap::new();
    for line in m.lines() {
        let Some(rest) = line.strip_prefix("palisade_operator_kube_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        out.insert((label("component"), label("verb"), label("resource")), n);
    }
    out
}

type Counts = std::collections::BTreeMap<(String, String, String), u64>;

/// What was sent between `a` and `b`, by `component`.
fn sent(a: &Counts, b: &Counts, component: &str) -> Counts {
    b.iter()
        .filter(|((c, _, _), _)| c == component)
        .filter_map(|(k, n)| {
            let d = n - a.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Reads in `d`: GETs, and LISTs a watch did not follow (a watcher's relist is legitimate).
fn reads(d: &Counts) -> u64 {
    let mut lists: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    let mut gets = 0;
    for ((_, verb, resource), n) in d {
        match verb.as_str() {
            "get" => gets += n,
            "list" => *lists.entry(resource).or_default() += *n as i64,
            "watch" => *lists.entry(resource).or_default() -= *n as i64,
            _ => {}
        }
    }
    gets + lists.values().map(|n| (*n).max(0) as u64).sum::<u64>()
}

fn table(d: &Counts) -> String {
    d.iter()
        .map(|((_, verb, resource), n)| format!("{verb} {resource}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the policy controller has sent nothing for two seconds (the other components
/// renew the Lease and write evidence on their own clocks); returns the counts then.
async fn quiet(op: &Operator) -> Counts {
    let policy = |c: &Counts| -> Counts {
        c.iter()
            .filter(|((component, _, _), _)| component == "policy")
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    };
    let mut last = requests(op);
    let mut still = 0;
    while still < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = requests(op);
        still = if policy(&now) == policy(&last) {
            still + 1
        } else {
            0
        };
        last = now;
    }
    last
}

/// What an apply and an evaluation tick cost the API server, from the operator's own count of
/// its requests. The policy controller reads everything from the operator's watches: an
/// action applied costs the writes it causes (bundle, statuses) and, at most, one read of the
/// manifest it has just written while the watch catches up; an IP list changed costs one read
/// of that list. The collector's idle evaluation ticks read nothing. The figures are printed
/// for bench/results/operator.md.
#[tokio::test]
async fn an_apply_costs_its_writes_and_an_idle_evaluation_tick_reads_nothing() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "apicost").await;
    let op = Operator::start(cp, "op-apicost", "op-apicost", &scope(&ns));
    let n = ns.name();
    let list = |ips: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blocklist\n  labels: \
             {{palisade.dev/list: blocklist}}\ndata:\n  list.txt: |\n{ips}"
        )
    };
    cp.apply(n, &list("    192.0.2.0/24\n")).expect("list");
    cp.apply(
        n,
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: deny-list}\n\
         spec:\n  deny: {status: 403}\n  conditions:\n    ipRangesFrom:\n      - selector:\n          \
         matchLabels: {palisade.dev/list: blocklist}\n",
    )
    .expect("action");
    cp.apply(n, FLOODER).expect("rule");
    let generation = |action: &str| {
        cp.kubectl_ok(&[
            "-n",
            n,
            "get",
            "securityaction",
            action,
            "-o",
            "jsonpath={.status.bundleGeneration}",
        ])
        .map_err(|e| e.to_string())
        .and_then(|g| g.trim().parse::<u64>().map_err(|e| format!("{g:?}: {e}")))
    };
    let first = eventually("deny-list in a bundle", || async {
        generation("deny-list")
    })
    .await;
    eventually("the rule compiled", || async {
        let g = cp
            .kubectl_ok(&[
                "-n",
                n,
                "get",
                "detectionrule",
                "flooder",
                "-o",
                "jsonpath={.status.observedGeneration}",
            ])
            .map_err(|e| e.to_string())?;
        (g.trim() == "1").then_some(()).ok_or(format!("{g:?}"))
    })
    .await;

    // An action applied.
    let before = quiet(&op).await;
    cp.apply(
        n,
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: deny-bot}\n\
         spec:\n  deny: {status: 403}\n  conditions:\n    userAgents: [{value: evilbot, type: Exact}]\n",
    )
    .expect("second action");
    eventually("deny-bot in a newer bundle", || async {
        match generation("deny-bot")? {
            g if g > first => Ok(()),
            g => Err(format!("generation {g}")),
        }
    })
    .await;
    let after = quiet(&op).await;
    let apply = sent(&before, &after, "policy");
    eprintln!("an action applied: {}", table(&apply));
    assert!(
        reads(&apply) <= 1,
        "an apply reads from the watches, at most the manifest it wrote: {apply:?}"
    );
    assert!(
        apply.contains_key(&("policy".into(), "patch".into(), "configmaps".into())),
        "the bundle was written: {apply:?}"
    );

    // Its referenced list changed: one read of the list.
    let before = after;
    cp.apply(n, &list("    192.0.2.0/24\n    203.0.113.9\n"))
        .expect("list changed");
    // (An action's `bundleGeneration` stays: its status did not change. The bundle did.)
    let written = |c: &Counts| {
        c.get(&("policy".into(), "patch".into(), "configmaps".into()))
            .copied()
            .unwrap_or(0)
    };
    eventually("the new list in a bundle", || async {
        let now = requests(&op);
        (written(&now) > written(&before))
            .then_some(())
            .ok_or("no bundle written yet".to_owned())
    })
    .await;
    let after = quiet(&op).await;
    let changed = sent(&before, &after, "policy");
    eprintln!("a referenced IP list changed: {}", table(&changed));
    assert!(
        (1..=2).contains(&reads(&changed)),
        "the list is read once (and at most the manifest): {changed:?}"
    );

    // Nothing changes: the evaluation ticks of the collector read nothing.
    let rounds = |m: &str| {
        metric_sum(
            m,
            "palisade_operator_collector_evaluation_seconds_count",
            "",
        )
    };
    let before = requests(&op);
    let start = rounds(&op.metrics().expect("metrics"));
    eventually("five idle evaluation rounds", || async {
        let now = rounds(&op.metrics().map_err(|e| e.to_string())?);
        (now >= start + 5)
            .then_some(())
            .ok_or(format!("{} rounds", now - start))
    })
    .await;
    let after = requests(&op);
    let idle = sent(&before, &after, "collector");
    eprintln!("five idle evaluation rounds: {}", table(&idle));
    assert_eq!(reads(&idle), 0, "an idle tick reads nothing: {idle:?}");
    let policy = sent(&before, &after, "policy");
    assert_eq!(
        reads(&policy),
        0,
        "nor does the policy controller: {policy:?}"
    );
}
