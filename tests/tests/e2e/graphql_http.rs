//! GraphQL over HTTP: media types, GET, GraphiQL, health and metrics.

use reqwest::Method;
use serde_json::Value;

use crate::get;
use rondo_tests::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn graphql_over_http_surface() {
    let cluster = Cluster::builder().start().await.unwrap();
    let base = cluster.admin.base.clone();

    // GET query, JSON answer.
    let url = format!("{base}/graphql?query=%7B%20songs%20%7B%20totalCount%20%7D%20%7D");
    let (status, h, body) = get(
        &cluster,
        Method::GET,
        &url,
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["songs"]["totalCount"], 0);

    // The GraphQL response media type, with 400 for a request error.
    let (status, h, _) = get(
        &cluster,
        Method::GET,
        &url,
        &[("accept", "application/graphql-response+json")],
    )
    .await;
    assert_eq!(
        (status, h["content-type"].to_str().unwrap()),
        (200, "application/graphql-response+json")
    );
    let bad = format!("{base}/graphql?query=%7B%20songs%20%7B");
    let (status, _, _) = get(
        &cluster,
        Method::GET,
        &bad,
        &[("accept", "application/graphql-response+json")],
    )
    .await;
    assert_eq!(status, 400);

    // Mutations need POST.
    let m = format!("{base}/graphql?query=mutation%20%7B%20deleteSong(id%3A%20%22x%22)%20%7D");
    let (status, h, body) = get(
        &cluster,
        Method::GET,
        &m,
        &[("authorization", &format!("Bearer {}", cluster.token))],
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(h["allow"], "POST");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED");

    // A browser gets GraphiQL.
    let (status, h, body) = get(
        &cluster,
        Method::GET,
        &format!("{base}/graphql"),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        String::from_utf8_lossy(&body)
            .to_lowercase()
            .contains("graphiql")
    );

    // Introspection works (the schema is public and documented).
    let r = cluster
        .anon
        .raw(
            "{ __schema { queryType { name } mutationType { name } } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query");

    // Health and metrics on the gateway and the node.
    let (status, _, _) = get(&cluster, Method::GET, &format!("{base}/healthz"), &[]).await;
    assert_eq!(status, 200);
    // Probes for an orchestrator: live, and ready once a node reports a
    // quorate ring (the gateway learns it within its health interval).
    let (status, _, _) = get(&cluster, Method::GET, &format!("{base}/livez"), &[]).await;
    assert_eq!(status, 200);
    let ready = rondo_tests::eventually(
        "the gateway is ready",
        std::time::Duration::from_secs(20),
        || async {
            let (status, _, body) =
                get(&cluster, Method::GET, &format!("{base}/readyz"), &[]).await;
            (status == 200).then(|| serde_json::from_slice::<Value>(&body).ok())?
        },
    )
    .await
    .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    // Metrics are for admins (the admin token, or the metrics token a
    // node is given; here the same).
    let bearer = format!("Bearer {}", cluster.token);
    let auth = [("authorization", bearer.as_str())];
    let (status, _, _) = get(&cluster, Method::GET, &format!("{base}/metrics"), &[]).await;
    assert_eq!(status, 401);
    let (status, _, body) = get(&cluster, Method::GET, &format!("{base}/metrics"), &auth).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("rondo_gateway_graphql_requests_total"));
    let node = format!("https://127.0.0.1:{}", cluster.nodes[0].http.port());
    let (status, _, body) = get(&cluster, Method::GET, &format!("{node}/healthz"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["node_id"],
        cluster.nodes[0].id.to_string()
    );
    let (status, _, _) = get(&cluster, Method::GET, &format!("{node}/livez"), &[]).await;
    assert_eq!(status, 200);
    let (status, _, body) = get(&cluster, Method::GET, &format!("{node}/readyz"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["phase"],
        "operational"
    );
    let (status, _, _) = get(&cluster, Method::GET, &format!("{node}/metrics"), &[]).await;
    assert_eq!(status, 401);
    let wrong = [("authorization", "Bearer wrong")];
    let (status, _, _) = get(&cluster, Method::GET, &format!("{node}/metrics"), &wrong).await;
    assert_eq!(status, 401);
    let (status, _, body) = get(&cluster, Method::GET, &format!("{node}/metrics"), &auth).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("rondo_node_uploads_total"));

    // CORS preflight for a third-party browser client.
    let (status, h, _) = get(
        &cluster,
        Method::OPTIONS,
        &format!("{base}/graphql"),
        &[
            ("origin", "https://example.test"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,authorization",
            ),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-origin"], "*");
}

/// Limits on a GraphQL request: its body (declared or not) and the length
/// of a batch. A refused request runs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_and_long_batches_are_refused() {
    let cluster = Cluster::builder().start().await.unwrap();
    let url = format!("{}/graphql", cluster.admin.base);
    let post = |body: reqwest::Body| {
        cluster
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let code = |v: &Value| {
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_string)
    };

    // 2 MiB of variables, with a Content-Length: refused before it is read.
    let padding = "x".repeat(2 << 20);
    let big =
        serde_json::json!({ "query": "{ songs { totalCount } }", "variables": { "pad": padding } });
    let r = post(reqwest::Body::from(big.to_string())).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v).as_deref(), Some("PAYLOAD_TOO_LARGE"), "{v}");

    // The same without a length (chunked): cut off at the limit.
    let text = big.to_string().into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        text.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = post(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v).as_deref(), Some("PAYLOAD_TOO_LARGE"), "{v}");

    // Forty such bodies of 16 MiB at once: each refused at the limit, and
    // the gateway's memory stays within 100 MiB of where it was.
    let pid = cluster.gateway.pid().unwrap();
    let before = crate::rss_kib(pid);
    let huge = |_| {
        let chunks = (0..256).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
        post(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    };
    let answers = futures::future::join_all((0..40).map(huge)).await;
    // Each is refused with 413, or cut off while it is still sending.
    let mut refused = 0;
    for r in answers.into_iter().flatten() {
        assert_eq!(r.status(), 413);
        refused += 1;
    }
    assert!(refused > 0, "no oversized body got its 413");
    let grown = crate::rss_kib(pid).saturating_sub(before);
    assert!(grown < 100 * 1024, "the gateway grew by {grown} KiB");

    // A batch of ten runs; of eleven, none.
    let register = |i: usize| {
        serde_json::json!({
            "query": "mutation($n: String!) { register(name: $n, password: \"long enough pw\") { user { name } } }",
            "variables": { "n": format!("batch{i}") },
        })
    };
    let eleven: Vec<Value> = (0..11).map(register).collect();
    let r = post(reqwest::Body::from(Value::from(eleven).to_string()))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v).as_deref(), Some("BAD_REQUEST"), "{v}");
    let ten: Vec<Value> = (0..10)
        .map(|i| serde_json::json!({ "query": format!("{{ s{i}: songs {{ totalCount }} }}") }))
        .collect();
    let r = post(reqwest::Body::from(Value::from(ten).to_string()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(10), "{v}");
    // The refused batch registered no one: every one of its names is free.
    for i in 0..11 {
        let r = post(reqwest::Body::from(register(i).to_string()))
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["data"]["register"]["user"]["name"],
            format!("batch{i}"),
            "{v}"
        );
    }
}

/// Logs written to a file carry no colour codes, and `log_format = "json"`
/// (here by `RONDO_NODE_LOG_FORMAT`, as a container would set it) writes
/// one JSON object per line.
#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_no_colour_codes_and_can_be_json() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    cluster.wait_layout().await.unwrap();
    let gateway_log = cluster.dir.path().join("gateway.log");
    for log in [cluster.nodes[0].log.clone(), gateway_log] {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("INFO"), "{}: {text}", log.display());
        assert!(
            !text.contains('\u{1b}'),
            "colour codes in {}",
            log.display()
        );
    }
    let before = std::fs::read_to_string(&cluster.nodes[2].log)
        .unwrap()
        .lines()
        .count();
    cluster
        .start_node_with(2, &[("RONDO_NODE_LOG_FORMAT", "json")])
        .await
        .unwrap();
    let lines = rondo_tests::eventually(
        "JSON lines from the restarted node",
        std::time::Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&cluster.nodes[2].log).ok()?;
            let all: Vec<String> = text.lines().map(str::to_string).collect();
            let fresh: Vec<String> = if all.len() >= before && text.starts_with('{') {
                all
            } else {
                all.into_iter().skip(before).collect()
            };
            (fresh.len() >= 3).then_some(fresh)
        },
    )
    .await
    .unwrap();
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
}
