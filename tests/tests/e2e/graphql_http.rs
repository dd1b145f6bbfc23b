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
    let (status, _, body) = get(&cluster, Method::GET, &format!("{base}/metrics"), &[]).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("rondo_gateway_graphql_requests_total"));
    let node = format!("https://127.0.0.1:{}", cluster.nodes[0].http.port());
    let (status, _, body) = get(&cluster, Method::GET, &format!("{node}/healthz"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["node_id"],
        cluster.nodes[0].id.to_string()
    );
    let (status, _, body) = get(&cluster, Method::GET, &format!("{node}/metrics"), &[]).await;
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
