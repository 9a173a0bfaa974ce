//! A million prefixes through the whole path: five gzip ConfigMaps selected by label, one
//! action referencing them, the operator's sharded bundle (every shard under the object
//! limit), and the sidecar-side decoder reassembling exactly the same set.

use std::io::Write as _;

use base64::Engine as _;
use palisade_e2e::bundle::read_bundle;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually_within, scope};

const PREFIXES: u32 = 1_000_000;
const PARTS: u32 = 5;
/// Every 4th address from 10.0.0.0: a million /32s, none adjacent, so the compiled set must
/// hold exactly one range per listed address.
fn address(i: u32) -> u32 {
    0x0a00_0000 + i * 4
}

fn part(p: u32) -> String {
    let per = PREFIXES / PARTS;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for i in p * per..(p + 1) * per {
        writeln!(gz, "{}", std::net::Ipv4Addr::from(address(i))).expect("gzip");
    }
    let bytes = gz.finish().expect("gzip");
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-{p}\n  labels: {{list: big}}\nbinaryData:\n  ips.gz: {}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test]
async fn a_million_prefixes_compile_into_shards_that_fit_and_decode_to_the_same_set() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "big").await;
    let _op = Operator::start(cp, "op-big", "op-big", &scope(&ns));
    for p in 0..PARTS {
        cp.kubectl_stdin(&["create", "-n", ns.name(), "-f", "-"], &part(p))
            .expect("list ConfigMap");
    }
    let action = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-big-list}
spec:
  deny: {}
  conditions:
    ipRangesFrom: [{selector: {matchLabels: {list: big}}, key: ips.gz}]
"#;
    cp.apply(ns.name(), action).expect("action");
    let client = cp.client().await;
    let (manifest, bundle) = eventually_within(4, "the big bundle", || async {
        let (m, b) = read_bundle(&client, ns.name()).await?;
        (b.ips.v4.len() == PREFIXES as usize)
            .then_some((m, b))
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert!(
        manifest.shards.len() > 1,
        "a million prefixes need several shards"
    );
    for s in &manifest.shards {
        // binaryData is base64 in the object: 4/3 of the shard, well under the 1 MiB limit.
        assert!(
            s.size * 4 / 3 < 1024 * 1024 - 4096,
            "shard {} is {} bytes",
            s.name,
            s.size
        );
    }
    let mut expected = (0..PREFIXES).map(address);
    for (start, end, _class) in bundle.ips.v4.iter() {
        let want = expected.next().expect("no more ranges than prefixes");
        assert_eq!(
            (start, end),
            (want, want),
            "range for {}",
            std::net::Ipv4Addr::from(want)
        );
    }
    assert!(expected.next().is_none(), "every prefix is in the set");
    let status = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "securityaction",
            "deny-big-list",
            "-o",
            "jsonpath={.status.state}",
        ])
        .expect("status");
    assert_eq!(status, "Active");
}
