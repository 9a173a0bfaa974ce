//! The detection collector end to end: sidecar reports authenticated by projected
//! service-account tokens (audience `palisade`) are merged, a DetectionRule fires, the
//! detected-client set reaches its ConfigMap, and a SecurityIncident with an Event appears.

use palisade_detection::report::Report;
use palisade_e2e::collector::{
    incident_names, list_server, post, report_from, token, tor_detects, tor_status,
};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope};

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

/// One second of traffic: `flood` requests from 198.51.100.66 and one from each of 20
/// ordinary clients.
fn report(ns: &str, flood: u32, now: jiff::Timestamp) -> Report {
    report_from(ns, "198.51.100.66", [203, 0, 113, 0], flood, now)
}

#[tokio::test]
async fn a_flood_reported_by_a_sidecar_becomes_a_detection_and_an_incident() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "detect").await;
    let op = Operator::start(cp, "op-detect", "op-detect", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");

    // Refused: no token, a token for another audience, a report for another namespace.
    let body = report(ns.name(), 10, jiff::Timestamp::now()).to_json();
    let c = &op.collector;
    eventually("the collector to answer", || async {
        let (code, msg) = post(c, "", body.clone()).await;
        (code == 401).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
    let wrong_aud = token(
        cp,
        ns.name(),
        "https://kubernetes.default.svc.cluster.local",
    );
    assert_eq!(
        post(c, &wrong_aud, body.clone()).await.0,
        401,
        "token for another audience"
    );
    // Until the leader has restored its state it answers 503 to every authenticated report.
    let other = report("someone-else", 10, jiff::Timestamp::now()).to_json();
    let (code, msg) = eventually("the leader to judge a report", || async {
        let (code, msg) = post(c, &tok, other.clone()).await;
        (code != 503)
            .then_some((code, msg.clone()))
            .ok_or(format!("{code} {msg}"))
    })
    .await;
    assert_eq!(
        code, 403,
        "a sidecar may only report for its own namespace: {msg}"
    );
    let (code, msg) = post(c, &tok, b"{not json".to_vec()).await;
    assert_eq!(code, 400, "malformed report: {msg}");

    // Accepted: a flood from one client, reported every second (as a sidecar does).
    let (code, msg) = eventually("the leader to accept a report", || async {
        let (code, msg) = post(
            c,
            &tok,
            report(ns.name(), 2000, jiff::Timestamp::now()).to_json(),
        )
        .await;
        (code == 202)
            .then_some((code, msg.clone()))
            .ok_or(format!("{code} {msg}"))
    })
    .await;
    assert_eq!(code, 202, "{msg}");
    let client = cp.client().await;
    eventually("the flooder in palisade-detected", || async {
        let _ = post(
            c,
            &tok,
            report(ns.name(), 2000, jiff::Timestamp::now()).to_json(),
        )
        .await;
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), ns.name());
        let cm = cms
            .get_opt("palisade-detected")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no ConfigMap yet")?;
        let bytes = cm
            .binary_data
            .and_then(|mut d| d.remove("detected"))
            .ok_or("no detected key")?;
        let doc = palisade_policy::decode_detected(&bytes.0).map_err(|e| e.to_string())?;
        let listed = doc
            .rules
            .get("flooder")
            .is_some_and(|c| c.iter().any(|d| d.key.to_string() == "ip:198.51.100.66"));
        let ordinary = doc
            .rules
            .values()
            .flatten()
            .any(|d| d.key.to_string().starts_with("ip:203.0.113."));
        assert!(!ordinary, "ordinary clients are not detected");
        listed.then_some(()).ok_or(format!("detected: {doc:?}"))
    })
    .await;
    let name = eventually("a SecurityIncident naming the flooder rule", || async {
        let out = cp
            .kubectl_ok(&["-n", ns.name(), "get", "securityincidents", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.rulesSummary} {.status.riskLevel} {.status.clients}{\"\\n\"}{end}"])
            .map_err(|e| e.to_string())?;
        let line = out.lines().find(|l| l.contains("flooder")).ok_or(format!("incidents: {out:?}"))?;
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(matches!(fields.get(2), Some(&("Low" | "Moderate" | "Severe"))), "risk level: {line}");
        Ok::<_, String>(fields[0].to_owned())
    })
    .await;
    eventually("the rule's status: Ready and a detected-client count", || async {
        let out = cp
            .kubectl_ok(&["-n", ns.name(), "get", "detectionrule", "flooder", "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.detectedClients}"])
            .map_err(|e| e.to_string())?;
        (out == "True 1").then_some(()).ok_or(out)
    })
    .await;
    let listed = cp
        .kubectl_ok(&["-n", ns.name(), "get", "incidents"])
        .expect("short name works");
    assert!(
        listed.contains(&name) && listed.contains("RISK"),
        "printer columns: {listed}"
    );
    eventually("an IncidentOpened Event", || async {
        let ev = cp
            .kubectl_ok(&[
                "-n",
                ns.name(),
                "events",
                "--for",
                &format!("securityincident/{name}"),
            ])
            .map_err(|e| e.to_string())?;
        ev.contains("IncidentOpened").then_some(()).ok_or(ev)
    })
    .await;
}

/// The name and `status.proposedAction` of the first incident that has one.
async fn proposed_action(cp: &ControlPlane, ns: &str) -> Result<(String, String), String> {
    let api: kube::Api<palisade_crds::SecurityIncident> =
        kube::Api::namespaced(cp.client().await, ns);
    let list = api
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .iter()
        .find_map(|i| {
            let yaml = i.status.as_ref()?.proposed_action.clone()?;
            Some((i.metadata.name.clone()?, yaml))
        })
        .ok_or(format!(
            "{} incidents, none with a proposed action",
            list.items.len()
        ))
}

async fn status_from(sc: &Sidecar, from: &str) -> Result<u16, String> {
    get(from.parse().expect("ip"), sc.addr, "/", &[])
        .await
        .map(|(s, _)| s)
}

#[tokio::test]
async fn an_incidents_proposed_action_applies_and_denies_its_client_at_the_sidecar() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "propose").await;
    let op = Operator::start(cp, "op-propose", "op-propose", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, None);
    eventually("the sidecar to forward the future flooder", || async {
        let code = status_from(&sc, "127.0.0.66").await?;
        (code == 200).then_some(()).ok_or(format!("{code}"))
    })
    .await;

    // The flood comes from 127.0.0.66 (the test connects from that loopback address later).
    let c = &op.collector;
    let (name, yaml) = eventually("an incident for 127.0.0.66", || async {
        let r = report_from(
            ns.name(),
            "127.0.0.66",
            [127, 0, 0, 0],
            2000,
            jiff::Timestamp::now(),
        );
        let (code, msg) = post(c, &tok, r.to_json()).await;
        if code != 202 {
            return Err(format!("{code} {msg}"));
        }
        proposed_action(cp, ns.name()).await
    })
    .await;
    assert!(yaml.contains("127.0.0.66"), "{yaml}");
    assert!(
        !yaml.contains("127.0.0.7\n"),
        "only the incident's clients: {yaml}"
    );
    assert!(
        yaml.contains(&format!("name: {name}")),
        "named after the incident: {yaml}"
    );
    assert!(
        yaml.contains(&format!("namespace: {}", ns.name())),
        "{yaml}"
    );
    assert!(yaml.contains("ttl: 24h"), "{yaml}");

    // The API server accepts it as is, then it is applied for real.
    let dry = cp
        .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &yaml)
        .unwrap_or_else(|e| panic!("server dry-run of the proposed action: {e}\n{yaml}"));
    assert!(
        dry.contains(&format!("securityaction.palisade.dev/{name}")),
        "{dry}"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &yaml)
        .unwrap_or_else(|e| panic!("applying the proposed action: {e}\n{yaml}"));
    eventually("the sidecar to deny the incident's client", || async {
        let code = status_from(&sc, "127.0.0.66").await?;
        (code == 403).then_some(()).ok_or(format!("{code}"))
    })
    .await;
    assert_eq!(
        status_from(&sc, "127.0.0.7").await,
        Ok(200),
        "a benign client keeps getting 200"
    );
    let expires = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "securityaction",
            &name,
            "-o",
            "jsonpath={.status.expireTime}",
        ])
        .expect("action status");
    assert!(!expires.is_empty(), "the proposed action expires (ttl)");
}

/// Posts one second of the flood.
async fn flood(c: &str, tok: &str, ns: &str) -> Result<(), String> {
    let r = report(ns, 2000, jiff::Timestamp::now());
    let (code, msg) = post(c, tok, r.to_json()).await;
    (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
}

/// `<state> <lastDetectedTime>` of incident `name`.
fn state_and_last(cp: &ControlPlane, ns: &str, name: &str) -> Result<String, String> {
    cp.kubectl_ok(&[
        "-n",
        ns,
        "get",
        "securityincident",
        name,
        "-o",
        "jsonpath={.status.state} {.status.lastDetectedTime}",
    ])
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_archived_incident_stays_archived_and_the_flood_going_on_opens_a_new_one() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "archive").await;
    let op = Operator::start(cp, "op-archive", "op-archive", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");
    let (c, n) = (op.collector.as_str(), ns.name());
    let (first, _) = eventually("a first incident", || async {
        flood(c, &tok, n).await?;
        proposed_action(cp, n).await
    })
    .await;
    cp.kubectl_ok(&[
        "-n",
        n,
        "label",
        "securityincident",
        &first,
        "palisade.dev/archived=true",
    ])
    .expect("archive");
    let archived = eventually("the archived incident's state", || async {
        flood(c, &tok, n).await?;
        let out = state_and_last(cp, n, &first)?;
        out.starts_with("Archived ")
            .then_some(out.clone())
            .ok_or(out)
    })
    .await;
    // The flood goes on: the client opens a new incident; the archived one absorbs nothing.
    eventually("a new incident for the same flooder", || async {
        flood(c, &tok, n).await?;
        let names = incident_names(cp, n)?;
        (names.len() >= 2).then_some(()).ok_or(format!("{names:?}"))
    })
    .await;
    for _ in 0..3 {
        flood(c, &tok, n).await.expect("report");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(
        state_and_last(cp, n, &first).expect("archived incident"),
        archived,
        "stays archived and is not updated by new detections"
    );
}

/// The Events of reason `reason` about rule `tor`.
fn tor_events(cp: &ControlPlane, ns: &str, reason: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=DetectionRule,involvedObject.name=tor,reason={reason}"),
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let list: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn a_tor_list_downloaded_from_a_url_detects_its_exits_and_survives_bad_downloads() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "torlist").await;
    let op = Operator::start(cp, "op-torlist", "op-torlist", &scope(&ns));
    let good = "# exits\n198.51.100.20\n198.51.100.21\n2001:db8::7\n".to_owned();
    let answer = std::sync::Arc::new(std::sync::Mutex::new((200u16, good)));
    let port = list_server(answer.clone()).await;
    let n = ns.name();
    let rule = |path: &str| {
        format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: tor}}\n\
             spec:\n  type: TorList\n  detectionTtl: 1m\n  torList: {{url: 'http://127.0.0.1:{port}{path}', refreshInterval: 5m}}\n"
        )
    };
    cp.apply(n, &rule("/exits")).expect("rule");
    let st = eventually("the list fetched", || async {
        let st = tor_status(cp, n)?;
        (st["list"]["entries"] == 3)
            .then_some(st.clone())
            .ok_or(st.to_string())
    })
    .await;
    assert_eq!(
        st["list"]["source"],
        format!("url http://127.0.0.1:{port}/exits"),
        "{st}"
    );
    assert!(st["list"]["updateTime"].is_string(), "{st}");
    assert!(st["list"].get("lastError").is_none(), "{st}");
    assert_eq!(
        (&st["ready"]["status"], &st["ready"]["reason"]),
        (&"True".into(), &"Fetched".into()),
        "{st}"
    );

    // Traffic from an exit is detected like with a ConfigMap list.
    let tok = token(cp, n, "palisade");
    let client = cp.client().await;
    let c = op.collector.as_str();
    let traffic = |exit: &'static str| {
        let tok = tok.clone();
        async move {
            let r = report_from(n, exit, [203, 0, 113, 0], 3, jiff::Timestamp::now());
            let (code, msg) = post(c, &tok, r.to_json()).await;
            (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
        }
    };
    eventually("the exit 198.51.100.21 detected", || async {
        traffic("198.51.100.21").await?;
        tor_detects(&client, n, "198.51.100.21")
            .await?
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;
    assert!(
        !tor_detects(&client, n, "203.0.113.1").await.expect("read"),
        "not an exit"
    );

    // A body that is not a list: clear message, the last good list is kept and used.
    *answer.lock().expect("answer") = (200, "<html>\n<body>maintenance</body>\n".into());
    cp.apply(n, &rule("/exits?v=2")).expect("new url");
    let st = eventually("the bad body reported", || async {
        let st = tor_status(cp, n)?;
        (st["ready"]["reason"] == "FetchFailed")
            .then_some(st.clone())
            .ok_or(st.to_string())
    })
    .await;
    let err = st["list"]["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains("line 1") && err.contains("<html>"), "{st}");
    assert_eq!(st["list"]["entries"], 3, "the last good list stays: {st}");
    assert_eq!(st["ready"]["status"], "False", "{st}");
    let msg = st["ready"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("still using the list fetched from"), "{st}");
    eventually("the rule Ready=False/FetchFailed", || async {
        let st = tor_status(cp, n)?;
        (st["rule"]["status"] == "False" && st["rule"]["reason"] == "FetchFailed")
            .then_some(())
            .ok_or(st.to_string())
    })
    .await;
    eventually("a ListFetchFailed Event", || async {
        let ev = cp
            .kubectl_ok(&["-n", n, "events", "--for", "detectionrule/tor"])
            .map_err(|e| e.to_string())?;
        ev.contains("ListFetchFailed").then_some(()).ok_or(ev)
    })
    .await;

    // An HTTP error: named in the status; the old list still detects its other exit.
    *answer.lock().expect("answer") = (404, "not found".into());
    cp.apply(n, &rule("/gone")).expect("new url");
    eventually("the 404 reported", || async {
        let st = tor_status(cp, n)?;
        let err = st["list"]["lastError"].as_str().unwrap_or_default();
        err.contains("HTTP 404").then_some(()).ok_or(st.to_string())
    })
    .await;
    eventually(
        "the exit 198.51.100.20 detected with the last good list",
        || async {
            traffic("198.51.100.20").await?;
            tor_detects(&client, n, "198.51.100.20")
                .await?
                .then_some(())
                .ok_or("not yet".to_owned())
        },
    )
    .await;
}

/// Waits until rule `tor` shows `ListReady` and `Ready` with `status` and `reason`, and a
/// Warning Event of that reason when False; returns the status.
async fn tor_state(cp: &ControlPlane, ns: &str, status: &str, reason: &str) -> serde_json::Value {
    let st = eventually(
        &format!("ListReady and Ready {status}/{reason}"),
        || async {
            let st = tor_status(cp, ns)?;
            let ok = st["ready"]["status"] == status
                && st["ready"]["reason"] == reason
                && st["rule"]["status"] == status
                && (status == "True" || st["rule"]["reason"] == reason);
            ok.then_some(st.clone()).ok_or(st.to_string())
        },
    )
    .await;
    if status == "False" {
        let events = eventually(&format!("a {reason} Event"), || async {
            let ev = tor_events(cp, ns, reason)?;
            (!ev.is_empty()).then_some(ev).ok_or("none yet".to_owned())
        })
        .await;
        assert_eq!(events.len(), 1, "one Event per state entered: {events:?}");
        assert_eq!(events[0]["type"], "Warning", "{events:?}");
        let count = events[0]["count"].as_i64().unwrap_or(1);
        assert_eq!(
            count, 1,
            "not published again while the state lasts: {events:?}"
        );
        assert_eq!(
            st["rule"]["message"], st["ready"]["message"],
            "Ready says why the list is not ready: {st}"
        );
    }
    st
}

#[tokio::test]
async fn a_tor_list_from_a_configmap_reports_a_missing_or_bad_configmap_and_recovers() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "torcm").await;
    let op = Operator::start(cp, "op-torcm", "op-torcm", &scope(&ns));
    let n = ns.name();
    cp.apply(
        n,
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {name: tor}\n\
         spec:\n  type: TorList\n  detectionTtl: 1m\n  torList: {fromConfigMap: {name: tor-exits, key: list}}\n",
    )
    .expect("rule");
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tor-exits}}\ndata: {data}\n")
    };

    // No ConfigMap: nothing to detect with, and the rule says so.
    let st = tor_state(cp, n, "False", "ConfigMapNotFound").await;
    let msg = st["ready"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!("ConfigMap {n}/tor-exits not found"))
            && msg.contains("the rule detects nobody"),
        "{st}"
    );
    assert_eq!(
        st["list"]["source"],
        format!("configmap {n}/tor-exits key list"),
        "{st}"
    );
    assert_eq!(st["list"]["entries"], 0, "{st}");
    assert!(st["list"]["lastError"].is_string(), "{st}");

    // The ConfigMap without the key.
    cp.apply(n, &cm("{other: '192.0.2.1'}")).expect("configmap");
    let st = tor_state(cp, n, "False", "KeyNotFound").await;
    let msg = st["ready"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "ConfigMap {n}/tor-exits has no key \"list\" (its keys: other)"
        )),
        "{st}"
    );

    // Fixed: the rule recovers without a restart and detects with the list.
    cp.apply(
        n,
        &cm("{list: \"# exits\\n198.51.100.30\\n198.51.100.31\\n2001:db8::9\\n\"}"),
    )
    .expect("configmap");
    let st = tor_state(cp, n, "True", "Read").await;
    assert_eq!(st["list"]["entries"], 3, "{st}");
    assert!(st["list"]["updateTime"].is_string(), "{st}");
    assert!(st["list"].get("lastError").is_none(), "{st}");
    assert_eq!(st["rule"]["reason"], "Active", "{st}");
    let tok = token(cp, n, "palisade");
    let client = cp.client().await;
    let c = op.collector.as_str();
    eventually("the exit 198.51.100.31 detected", || async {
        let r = report_from(
            n,
            "198.51.100.31",
            [203, 0, 113, 0],
            3,
            jiff::Timestamp::now(),
        );
        let (code, msg) = post(c, &tok, r.to_json()).await;
        if code != 202 {
            return Err(format!("{code} {msg}"));
        }
        tor_detects(&client, n, "198.51.100.31")
            .await?
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;
    let unchanged = tor_status(cp, n).expect("status");
    assert_eq!(
        unchanged["list"], st["list"],
        "re-reading the same list changes nothing"
    );
    // An unchanged ConfigMap is not read again: its version is checked every 5 s (one
    // metadata GET), where it used to be read whole every second.
    let gets = || {
        let m = op.metrics().expect("operator metrics");
        m.lines()
            .filter(|l| {
                l.starts_with("palisade_operator_kube_requests_total{")
                    && l.contains("component=\"collector\"")
                    && l.contains("verb=\"get\"")
                    && l.contains("resource=\"configmaps\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = gets();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let in_10s = gets() - before;
    assert!(
        in_10s <= 3.0,
        "{in_10s} ConfigMap GETs in 10 s for one unchanged list"
    );

    // A typo: named with its line; the last good list stays in use.
    cp.apply(n, &cm("{list: \"198.51.100.30\\n198.51.100.3l\\n\"}"))
        .expect("configmap");
    let st = tor_state(cp, n, "False", "InvalidList").await;
    let msg = st["ready"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!(
            "ConfigMap {n}/tor-exits key list: line 2 (\"198.51.100.3l\") is not an IP address or CIDR"
        )) && msg.contains(&format!("still using the list read from configmap {n}/tor-exits key list")),
        "{st}"
    );
    assert_eq!(st["list"]["entries"], 3, "the last good list stays: {st}");
    let bad_at = st["list"]["updateTime"].clone();
    assert!(
        st["list"]["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("line 2"),
        "{st}"
    );

    // A gzip-compressed binaryData key, named by the rule: read, and the rule recovers.
    let gz = {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"198.51.100.40\n198.51.100.41\n")
            .expect("gzip");
        base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"))
    };
    cp.apply(
        n,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tor-exits}}\nbinaryData: {{list.gz: {gz}}}\n"
        ),
    )
    .expect("configmap");
    cp.kubectl_ok(&[
        "-n",
        n,
        "patch",
        "detectionrule",
        "tor",
        "--type=merge",
        "-p",
        r#"{"spec":{"torList":{"fromConfigMap":{"key":"list.gz"}}}}"#,
    ])
    .expect("rule key");
    let st = tor_state(cp, n, "True", "Read").await;
    assert_eq!(
        st["list"]["source"],
        format!("configmap {n}/tor-exits key list.gz"),
        "{st}"
    );
    assert_eq!(st["list"]["entries"], 2, "{st}");
    assert_ne!(
        st["list"]["updateTime"], bad_at,
        "a new list, a new time: {st}"
    );

    // No longer a TorList rule: its list status goes away.
    cp.kubectl_ok(&[
        "-n",
        n,
        "patch",
        "detectionrule",
        "tor",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"Flooder","torList":null}}"#,
    ])
    .expect("rule type");
    eventually("status.list and ListReady gone", || async {
        let st = tor_status(cp, n)?;
        (st["list"].is_null() && st["ready"].is_null() && st["rule"]["reason"] == "Active")
            .then_some(())
            .ok_or(st.to_string())
    })
    .await;
}

/// One second of a sidecar's report: every one of 20 clients gets `status` from the app on
/// each of `each` requests to `/login`, and client 198.51.100.99 sends 20 times as many.
fn second_of(ns: &str, status: u16, each: u32) -> Report {
    use palisade_detection::counter::{Counter, CounterConfig};
    use palisade_detection::facts::RequestFacts;
    use palisade_detection::report::SidecarId;
    let id = SidecarId {
        pod: "api-0".into(),
        workload: "api".into(),
        namespace: ns.into(),
    };
    let now = jiff::Timestamp::now();
    let mut counter = Counter::new(
        id,
        &CounterConfig::default(),
        now - jiff::SignedDuration::from_secs(1),
    );
    let mut record = |ip: [u8; 4], n: u32| {
        for _ in 0..n {
            let mut f = RequestFacts::new(ip.into(), status);
            f.attrs.path = Some("/login");
            counter.record(&f);
        }
    };
    for i in 1..=20u8 {
        record([203, 0, 113, i], each);
    }
    record([198, 51, 100, 99], each * 20);
    counter.take_report(now)
}

/// One second of a bad deploy: everyone gets 401, the retrier 200 of them.
fn failing_second(ns: &str) -> Report {
    second_of(ns, 401, 10)
}

/// A bad deploy answers 401 to everyone: one SecurityIncident of scope `Namespace` ("Error
/// surge on /login", no rule, no proposed action) with one Warning Event `ErrorSurge`, and no
/// Brute Guessor detection of the client that retries hardest, however many errors it piles
/// up. When the app answers again, the same incident ends (Event `ErrorSurgeEnded`).
#[tokio::test]
async fn a_bad_deploy_is_one_error_surge_not_a_brute_guessor_per_client() {
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, ListParams};
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "surge").await;
    let op = Operator::start(cp, "op-surge", "op-surge", &scope(&ns));
    cp.apply(
        ns.name(),
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {name: brute}\n\
         spec:\n  type: BruteGuessor\n  bruteGuessor: {minRequests: 20, window: 5m}\n",
    )
    .expect("rule");
    let tok = token(cp, ns.name(), "palisade");
    let client = cp.client().await;
    let events = |reason: &'static str| {
        let client = client.clone();
        let ns = ns.name().to_owned();
        async move {
            let events = Api::<Event>::namespaced(client, &ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                events
                    .items
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some(reason))
                    .filter(|e| {
                        e.regarding
                            .as_ref()
                            .is_some_and(|r| r.kind.as_deref() == Some("SecurityIncident"))
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let c = op.collector.as_str();
    let posted = std::cell::Cell::new(0u64);
    let opened = eventually("an ErrorSurge Event on a SecurityIncident", || async {
        let (code, msg) = post(c, &tok, failing_second(ns.name()).to_json()).await;
        if code != 202 {
            return Err(format!("{code} {msg}"));
        }
        posted.set(posted.get() + 1);
        events("ErrorSurge")
            .await?
            .into_iter()
            .next()
            .ok_or("no ErrorSurge yet".to_owned())
    })
    .await;
    let note = opened.note.clone().unwrap_or_default();
    assert!(note.contains("error surge: 100%"), "{note}");
    assert!(note.contains("21 clients"), "{note}");
    assert!(note.contains("/login"), "{note}");
    let name = opened
        .regarding
        .as_ref()
        .and_then(|r| r.name.clone())
        .expect("the Event names its incident");
    // More of the same: the retrier is far over minRequests, and still nobody is flagged,
    // and the surge is one incident, reported once.
    for _ in 0..10 {
        let (code, msg) = post(c, &tok, failing_second(ns.name()).to_json()).await;
        assert_eq!(code, 202, "{msg}");
        posted.set(posted.get() + 1);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        incident_names(cp, ns.name()).expect("incidents"),
        std::slice::from_ref(&name),
        "one incident, about the namespace"
    );
    let status = |name: &str| -> serde_json::Value {
        let out = cp
            .kubectl_ok(&[
                "-n",
                ns.name(),
                "get",
                "securityincident",
                name,
                "-o",
                "json",
            ])
            .expect("get incident");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["status"].clone()
    };
    let st = status(&name);
    assert_eq!(st["scope"], "Namespace", "{st}");
    assert_eq!(st["rulesSummary"], "error surge", "{st}");
    assert_eq!(
        st["displayName"], "Error surge on /login: 100% errors, 21 of 21 clients failing",
        "{st}"
    );
    assert_eq!(st["clients"], 21, "{st}");
    assert!(st["proposedAction"].is_null(), "nobody to deny: {st}");
    assert!(st["detectionRules"].is_null(), "{st}");
    let errors = st["requests"].as_u64().expect("requests");
    let posted = posted.get();
    assert!(
        errors > 0 && errors <= posted * 400,
        "{errors} errors of {posted} reports of 400: {st}"
    );
    assert_eq!(
        st["attributes"]["paths"]["top"][0]["value"], "/login",
        "{st}"
    );
    assert_eq!(
        st["attributes"]["responseCodes"]["top"][0]["value"], "401",
        "{st}"
    );
    let detected =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns.name())
            .get_opt("palisade-detected")
            .await
            .expect("read palisade-detected")
            .and_then(|cm| cm.binary_data)
            .and_then(|mut d| d.remove("detected"))
            .map(|b| palisade_policy::decode_detected(&b.0).expect("a detected document"));
    assert!(
        detected
            .as_ref()
            .is_none_or(|d| d.rules.values().all(Vec::is_empty)),
        "nobody detected: {detected:?}"
    );
    assert_eq!(
        events("ErrorSurge").await.expect("events").len(),
        1,
        "once per episode"
    );
    let m = op.metrics().expect("operator metrics");
    assert!(m.contains("palisade_operator_error_surges_total 1"), "{m}");
    assert!(
        m.contains("palisade_operator_error_surge_namespaces 1"),
        "{m}"
    );
    // The deploy is fixed: in the next 30 s slice the app answers everyone again, five times
    // the errors so far (40 requests per `each`), so errors fall below 20 % of the window.
    let slice = 30_000;
    let wait = slice - jiff::Timestamp::now().as_millisecond().rem_euclid(slice) + 1_500;
    tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
    let each = u32::try_from(posted * 400 * 5 / 40 + 1).expect("fits");
    let (code, msg) = post(c, &tok, second_of(ns.name(), 200, each).to_json()).await;
    assert_eq!(code, 202, "{msg}");
    let ended = eventually("an ErrorSurgeEnded Event", || async {
        events("ErrorSurgeEnded")
            .await?
            .into_iter()
            .next()
            .ok_or("not over yet".to_owned())
    })
    .await;
    assert_eq!(
        ended.regarding.as_ref().and_then(|r| r.name.clone()),
        Some(name.clone()),
        "the same incident ends"
    );
    assert_eq!(
        incident_names(cp, ns.name()).expect("incidents"),
        std::slice::from_ref(&name)
    );
    let end = status(&name);
    assert!(
        end["lastDetectedTime"].as_str() >= st["lastDetectedTime"].as_str(),
        "{end}"
    );
    let m = op.metrics().expect("operator metrics");
    assert!(
        m.contains("palisade_operator_error_surge_namespaces 0"),
        "{m}"
    );
    assert!(m.contains("palisade_operator_error_surges_total 1"), "{m}");
}
