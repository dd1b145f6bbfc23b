//! Accounts, sessions, roles and playlists against a real 3-node cluster:
//! every account and playlist change is ordered by the ring and reaches
//! every node.

use std::io::Write;
use std::process::{Command, Stdio};

use rondo_cli::Error as ClientError;
use rondo_cli::client::Client;
use rondo_tests::{Cluster, bin, tagged_wav};
use serde_json::{Value, json};

fn code(e: &ClientError) -> String {
    match e {
        ClientError::GraphQl { code, .. } => code.clone(),
        other => format!("{other}"),
    }
}

fn client(cluster: &Cluster, token: Option<&str>) -> Client {
    Client::new(
        &cluster.admin.base,
        &cluster.ca_pem,
        token.map(str::to_owned),
    )
    .unwrap()
}

async fn register(
    cluster: &Cluster,
    name: &str,
    password: &str,
) -> Result<(String, Value), ClientError> {
    let data = cluster
        .anon
        .query(
            "mutation($n: String!, $p: String!) { register(name: $n, password: $p) { token expiresAt user { id name role } } }",
            json!({ "n": name, "p": password }),
        )
        .await?;
    let r = &data["register"];
    Ok((
        r["token"].as_str().unwrap_or_default().to_owned(),
        r["user"].clone(),
    ))
}

async fn login(cluster: &Cluster, name: &str, password: &str) -> Result<String, ClientError> {
    let data = cluster
        .anon
        .query(
            "mutation($n: String!, $p: String!) { login(name: $n, password: $p) { token user { name } } }",
            json!({ "n": name, "p": password }),
        )
        .await?;
    Ok(data["login"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn upload(c: &Client, dir: &std::path::Path, title: &str) -> Result<String, ClientError> {
    let path = dir.join(format!("{title}.wav"));
    tagged_wav(&path, title, "Playlister", "Lists", 0.3, title.len() as u64).unwrap();
    let r = c.upload_raw(&path, json!({}), "{ id }").await?;
    if let Some(e) = rondo_cli::client::first_error(&r) {
        return Err(e);
    }
    Ok(r["data"]["uploadSong"]["song"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn ids(p: &Value) -> Vec<String> {
    p["songs"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const PLAYLIST: &str = "{ id name songCount owner { name } songs(first: 10) { totalCount nodes { id title } } createdAt updatedAt }";

#[tokio::test(flavor = "multi_thread")]
async fn accounts_roles_and_playlists_through_the_ring() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Registering makes a listener, also the first account of a cluster:
    // admins are made by admins (here the admin token). Names are unique
    // case-insensitively; weak passwords are refused.
    let (_, bob) = register(&cluster, "bob", "battery staple").await.unwrap();
    assert_eq!(bob["role"], "LISTENER");
    let made = cluster
        .admin
        .query(
            "mutation { createUser(name: \"Alice\", password: \"correct horse\", role: ADMIN) { role } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(made["createUser"]["role"], "ADMIN");
    let alice_token = login(&cluster, "alice", "correct horse").await.unwrap();
    let e = register(&cluster, "ALICE", "another one")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "CONFLICT");
    let e = register(&cluster, "eve", "short").await.unwrap_err();
    assert_eq!(code(&e), "BAD_USER_INPUT");

    // Login: wrong passwords and unknown names get the same answer.
    assert_eq!(
        code(&login(&cluster, "bob", "wrong password").await.unwrap_err()),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(
            &login(&cluster, "nobody", "battery staple")
                .await
                .unwrap_err()
        ),
        "UNAUTHENTICATED"
    );
    let bob_token = login(&cluster, "BOB", "battery staple").await.unwrap();
    let bob_c = client(&cluster, Some(&bob_token));
    let me = bob_c
        .query("{ me { name role } }", json!({}))
        .await
        .unwrap();
    assert_eq!(me["me"]["name"], "bob");
    let anon_me = cluster
        .anon
        .query("{ me { name } }", json!({}))
        .await
        .unwrap();
    assert!(anon_me["me"].is_null());

    // Roles: a listener may not upload; an admin session and the admin
    // token may.
    let e = upload(&bob_c, dir.path(), "Forbidden Tune")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "FORBIDDEN");
    let alice_c = client(&cluster, Some(&alice_token));
    let s1 = upload(&alice_c, dir.path(), "First Tune").await.unwrap();
    let s2 = upload(&cluster.admin, dir.path(), "Second Tune")
        .await
        .unwrap();

    // Bob's playlist: create with a song, insert before it, move, remove,
    // rename.
    let data = bob_c
        .query(
            &format!("mutation($s: [ID!]) {{ createPlaylist(name: \"Road trip\", songIds: $s) {PLAYLIST} }}"),
            json!({ "s": [s1] }),
        )
        .await
        .unwrap();
    let p = &data["createPlaylist"];
    let pid = p["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (p["name"].as_str(), p["owner"]["name"].as_str()),
        (Some("Road trip"), Some("bob"))
    );
    assert_eq!(ids(p), vec![s1.clone()]);
    let mutate = |q: String, v: Value| {
        let c = bob_c.clone();
        async move { c.query(&q, v).await }
    };
    let data = mutate(
        format!("mutation($p: ID!, $s: [ID!]!) {{ addSongsToPlaylist(id: $p, songIds: $s, position: 0) {PLAYLIST} }}"),
        json!({ "p": pid, "s": [s2] }),
    )
    .await
    .unwrap();
    assert_eq!(ids(&data["addSongsToPlaylist"]), [s2.clone(), s1.clone()]);
    let data = mutate(
        format!("mutation($p: ID!) {{ movePlaylistSong(id: $p, from: 0, to: 1) {PLAYLIST} }}"),
        json!({ "p": pid }),
    )
    .await
    .unwrap();
    assert_eq!(ids(&data["movePlaylistSong"]), [s1.clone(), s2.clone()]);
    let data = mutate(
        format!("mutation($p: ID!) {{ renamePlaylist(id: $p, name: \"Long drive\") {PLAYLIST} }}"),
        json!({ "p": pid }),
    )
    .await
    .unwrap();
    assert_eq!(data["renamePlaylist"]["name"], "Long drive");
    // Bad input changes nothing.
    let e = mutate(
        "mutation($p: ID!) { removeSongsFromPlaylist(id: $p, positions: [9]) { id } }".into(),
        json!({ "p": pid }),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), "BAD_USER_INPUT");
    let e = mutate(
        "mutation($p: ID!, $s: [ID!]!) { addSongsToPlaylist(id: $p, songIds: $s) { id } }".into(),
        json!({ "p": pid, "s": [uuid::Uuid::new_v4().to_string()] }),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), "BAD_USER_INPUT");

    // Someone else's playlist: not visible, not changeable.
    let (carol_token, _) = register(&cluster, "carol", "carol's password")
        .await
        .unwrap();
    let carol_c = client(&cluster, Some(&carol_token));
    let e = carol_c
        .query(
            "query($p: ID!) { playlist(id: $p) { id } }",
            json!({ "p": pid }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "FORBIDDEN");
    let e = carol_c
        .query(
            "mutation($p: ID!) { deletePlaylist(id: $p) }",
            json!({ "p": pid }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "FORBIDDEN");
    let mine = carol_c
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap();
    assert_eq!(mine["playlists"]["totalCount"], 0);
    // No session, or a forged one.
    let e = cluster
        .anon
        .query("mutation { createPlaylist(name: \"x\") { id } }", json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");
    let forged = client(&cluster, Some(&bob_token.replace("listener", "admin")));
    let e = forged
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");
    // Signed with the cluster secret but for an account that does not
    // exist: refused; for bob, but saying admin: bob's role holds.
    let signer = rondo_core::session::SessionSigner::new(cluster.secret.clone());
    let exp = rondo_process::unix_now() + 600;
    let ghost = signer.sign(&rondo_core::session::Session {
        user: rondo_core::UserId(uuid::Uuid::new_v4()),
        role: rondo_core::session::Role::Admin,
        issued_ms: rondo_process::unix_now_ms(),
        expires: exp,
        id: [7; 16],
    });
    let e = client(&cluster, Some(&ghost))
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");
    let bob_id: rondo_core::UserId = bob["id"].as_str().unwrap().parse().unwrap();
    let promoted = signer.sign(&rondo_core::session::Session {
        user: bob_id,
        role: rondo_core::session::Role::Admin,
        issued_ms: rondo_process::unix_now_ms(),
        expires: exp,
        id: [8; 16],
    });
    let e = upload(
        &client(&cluster, Some(&promoted)),
        dir.path(),
        "Promoted Tune",
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), "FORBIDDEN");
    // A token that outlives the longest session is refused.
    let forever = signer.sign(&rondo_core::session::Session {
        user: bob_id,
        role: rondo_core::session::Role::Listener,
        issued_ms: rondo_process::unix_now_ms(),
        expires: exp + 365 * 24 * 3600,
        id: [9; 16],
    });
    let e = client(&cluster, Some(&forever))
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");

    // With a node down (2 of 3 remain a majority), playlists still change;
    // the node catches up when it returns.
    cluster.kill_node(2);
    let data = mutate(
        format!(
            "mutation($p: ID!) {{ removeSongsFromPlaylist(id: $p, positions: [0]) {PLAYLIST} }}"
        ),
        json!({ "p": pid }),
    )
    .await
    .unwrap();
    assert_eq!(ids(&data["removeSongsFromPlaylist"]), vec![s2.clone()]);
    cluster.restart_node(2).await.unwrap();
    let status_0 = cluster.ring_status(0).await.unwrap();
    rondo_tests::eventually(
        "node 2 to catch up",
        std::time::Duration::from_secs(20),
        || async {
            let s = cluster.ring_status(2).await.ok()?;
            (s.last_applied_seq >= status_0.last_applied_seq
                && s.catalog_digest == cluster.ring_status(0).await.ok()?.catalog_digest)
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Deleting a song takes it out of playlists.
    cluster
        .admin
        .query(
            "mutation($s: ID!) { deleteSong(id: $s) }",
            json!({ "s": s2 }),
        )
        .await
        .unwrap();
    rondo_tests::eventually(
        "the song to leave the playlist",
        std::time::Duration::from_secs(10),
        || async {
            let d = bob_c
                .query(
                    &format!("query($p: ID!) {{ playlist(id: $p) {PLAYLIST} }}"),
                    json!({ "p": pid }),
                )
                .await
                .ok()?;
            (d["playlist"]["songCount"] == 0).then_some(())
        },
    )
    .await
    .unwrap();
    let gone = bob_c
        .query(
            "mutation($p: ID!) { deletePlaylist(id: $p) }",
            json!({ "p": pid }),
        )
        .await
        .unwrap();
    assert_eq!(gone["deletePlaylist"], true);
    let left = bob_c
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap();
    assert_eq!(left["playlists"]["totalCount"], 0);

    // Logout ends that session on every gateway; the account's other
    // sessions go on.
    let other = login(&cluster, "bob", "battery staple").await.unwrap();
    let out = bob_c.query("mutation { logout }", json!({})).await.unwrap();
    assert_eq!(out["logout"], true);
    let e = bob_c
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");
    let still = client(&cluster, Some(&other))
        .query("{ me { name } }", json!({}))
        .await
        .unwrap();
    assert_eq!(still["me"]["name"], "bob");

    // `rondo user create --admin`: the password comes from stdin.
    let out = rondo_user(
        &cluster,
        &["create", "dave", "--admin"],
        "dave's password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin dave"));
    let dave = login(&cluster, "dave", "dave's password").await.unwrap();
    let me = client(&cluster, Some(&dave))
        .query("{ me { role } }", json!({}))
        .await
        .unwrap();
    assert_eq!(me["me"]["role"], "ADMIN");
    // Without the admin token the CLI fails with a clear error.
    let out = Command::new(bin("rondo"))
        .args(["user", "create", "mallory"])
        .env("RONDO_GATEWAY", &cluster.admin.base)
        .env("RONDO_TOKEN", "wrong")
        .env("RONDO_CA_CERT", cluster.dir.path().join("tls/ca.pem"))
        .env("RONDO_DATA", cluster.dir.path().join("no-dev-here"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rondo user ...` with the cluster's admin token; stdin is `input`.
fn rondo_user(cluster: &Cluster, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(bin("rondo"))
        .arg("user")
        .args(args)
        .env("RONDO_GATEWAY", &cluster.admin.base)
        .env("RONDO_TOKEN", &cluster.token)
        .env("RONDO_CA_CERT", cluster.dir.path().join("tls/ca.pem"))
        .env("RONDO_DATA", cluster.dir.path().join("no-dev-here"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A password change ends the account's other sessions; admins list
/// accounts, change roles, reset passwords and delete accounts (with their
/// playlists), through GraphQL and `rondo user`; the last admin stays.
#[tokio::test(flavor = "multi_thread")]
async fn passwords_change_and_admins_manage_accounts() {
    // Lena logs in more often than the default 5 a minute allow.
    let cluster = Cluster::builder()
        .nodes(2)
        .gateway_option("login_attempts_per_name", toml::Value::Integer(30))
        .start()
        .await
        .unwrap();
    let admin = cluster.admin.clone();
    let created = admin
        .query(
            "mutation { createUser(name: \"ada\", password: \"ada's password\", role: ADMIN) { id } }",
            json!({}),
        )
        .await
        .unwrap();
    let ada_id = created["createUser"]["id"].as_str().unwrap().to_owned();
    let (lena_token, lena) = register(&cluster, "lena", "lena's password").await.unwrap();
    let lena_id = lena["id"].as_str().unwrap().to_owned();
    let lena_c = client(&cluster, Some(&lena_token));
    let second = login(&cluster, "lena", "lena's password").await.unwrap();

    // Changing a password needs the old one and a good new one.
    let change = "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token user { name } } }";
    let e = lena_c
        .query(
            change,
            json!({ "o": "not it at all", "n": "a new password" }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "UNAUTHENTICATED");
    let e = lena_c
        .query(change, json!({ "o": "lena's password", "n": "short" }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BAD_USER_INPUT");
    let changed = lena_c
        .query(
            change,
            json!({ "o": "lena's password", "n": "a new password" }),
        )
        .await
        .unwrap();
    let fresh = changed["changePassword"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The sessions from before are over, the new one works; only the new
    // password opens one.
    for old in [&lena_token, &second] {
        let e = client(&cluster, Some(old))
            .query("{ playlists { totalCount } }", json!({}))
            .await
            .unwrap_err();
        assert_eq!(code(&e), "UNAUTHENTICATED");
    }
    let lena_c = client(&cluster, Some(&fresh));
    let me = lena_c.query("{ me { name } }", json!({})).await.unwrap();
    assert_eq!(me["me"]["name"], "lena");
    assert_eq!(
        code(
            &login(&cluster, "lena", "lena's password")
                .await
                .unwrap_err()
        ),
        "UNAUTHENTICATED"
    );
    login(&cluster, "lena", "a new password").await.unwrap();
    lena_c
        .query(
            "mutation { createPlaylist(name: \"Lena's\") { id } }",
            json!({}),
        )
        .await
        .unwrap();

    // Listing, role changes and deletions are for admins.
    let list = "{ users(first: 10) { totalCount nodes { name role } } }";
    assert_eq!(
        code(&lena_c.query(list, json!({})).await.unwrap_err()),
        "FORBIDDEN"
    );
    let users = admin.query(list, json!({})).await.unwrap();
    assert_eq!(users["users"]["totalCount"], 2);
    let names: Vec<&str> = users["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "lena"]);
    let e = lena_c
        .query(
            "mutation($u: ID!) { setUserRole(id: $u, role: ADMIN) { role } }",
            json!({ "u": lena_id }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "FORBIDDEN");

    // The last admin can be neither demoted nor deleted.
    for m in [
        "mutation($u: ID!) { setUserRole(id: $u, role: LISTENER) { role } }",
        "mutation($u: ID!) { deleteUser(id: $u) }",
    ] {
        let e = admin.query(m, json!({ "u": ada_id })).await.unwrap_err();
        assert_eq!(code(&e), "FORBIDDEN", "{m}");
        assert!(e.to_string().contains("last admin"), "{e}");
    }

    // Promoted, lena's session acts as an admin's at once; demoted, not.
    let role = "mutation($u: ID!, $r: UserRole!) { setUserRole(id: $u, role: $r) { role } }";
    admin
        .query(role, json!({ "u": lena_id, "r": "ADMIN" }))
        .await
        .unwrap();
    let all = lena_c.query(list, json!({})).await.unwrap();
    assert_eq!(all["users"]["totalCount"], 2);
    admin
        .query(role, json!({ "u": lena_id, "r": "LISTENER" }))
        .await
        .unwrap();
    assert_eq!(
        code(&lena_c.query(list, json!({})).await.unwrap_err()),
        "FORBIDDEN"
    );

    // An admin resets a forgotten password: the account's sessions end.
    admin
        .query(
            "mutation($u: ID!) { setUserPassword(id: $u, password: \"reset by ada\") { name } }",
            json!({ "u": lena_id }),
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            &lena_c
                .query("{ playlists { totalCount } }", json!({}))
                .await
                .unwrap_err()
        ),
        "UNAUTHENTICATED"
    );
    let lena_token = login(&cluster, "lena", "reset by ada").await.unwrap();

    // `rondo user list`, `role`, `password`, `delete`.
    let out = rondo_user(&cluster, &["list"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("ada") && listed.contains("admin"),
        "{listed}"
    );
    assert!(
        listed.contains("lena") && listed.contains("listener"),
        "{listed}"
    );
    let out = rondo_user(&cluster, &["role", "lena", "admin"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = client(&cluster, Some(&lena_token))
        .query("{ me { role } }", json!({}))
        .await
        .unwrap();
    assert_eq!(me["me"]["role"], "ADMIN");
    let out = rondo_user(&cluster, &["password", "lena"], "set by the cli\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lena_token = login(&cluster, "lena", "set by the cli").await.unwrap();
    let out = rondo_user(&cluster, &["delete", "nobody-here"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named"));
    let out = rondo_user(&cluster, &["delete", "lena"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleted: the session ends, the playlists go, the name is free again,
    // on every node.
    assert_eq!(
        code(
            &client(&cluster, Some(&lena_token))
                .query("{ playlists { totalCount } }", json!({}))
                .await
                .unwrap_err()
        ),
        "UNAUTHENTICATED"
    );
    let users = admin.query(list, json!({})).await.unwrap();
    assert_eq!(users["users"]["totalCount"], 1);
    let (again, _) = register(&cluster, "lena", "a second lena").await.unwrap();
    let mine = client(&cluster, Some(&again))
        .query("{ playlists { totalCount } }", json!({}))
        .await
        .unwrap();
    assert_eq!(mine["playlists"]["totalCount"], 0);
    rondo_tests::eventually(
        "both nodes to hold the same accounts",
        std::time::Duration::from_secs(20),
        || async {
            let a = cluster.ring_status(0).await.ok()?;
            let b = cluster.ring_status(1).await.ok()?;
            (a.last_applied_seq == b.last_applied_seq && a.catalog_digest == b.catalog_digest)
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// `rondo user app-password create|list|revoke`: the admin manages an
/// account's app passwords; the secret printed once works as a Subsonic
/// API key until revoked; a listener cannot see another's; an unknown
/// account is a clear error with exit code 1.
#[tokio::test(flavor = "multi_thread")]
async fn app_passwords_through_the_cli_work_as_api_keys_until_revoked() {
    let cluster = Cluster::builder().start().await.unwrap();
    let made = rondo_user(&cluster, &["create", "zoe"], "zoe's password\n");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = rondo_user(
        &cluster,
        &["app-password", "create", "zoe", "--name", "Symfonium"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let secret = text.lines().last().unwrap().trim().to_string();
    assert_eq!(secret.len(), 32, "{text}");
    let ping = |key: String| {
        let cluster = &cluster;
        async move {
            let url = format!("{}/rest/ping.view?apiKey={key}&f=json", cluster.admin.base);
            let r: Value = cluster
                .http()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["subsonic-response"].clone()
        }
    };
    assert_eq!(ping(secret.clone()).await["status"], "ok");
    let listed = rondo_user(&cluster, &["app-password", "list", "zoe"], "");
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listing.starts_with("Symfonium"), "{listing}");
    assert!(!listing.contains(&secret), "the secret is shown only once");
    let id = listing.split_whitespace().last().unwrap().to_string();
    // Another listener's session sees only its own (none).
    let (other, _) = register(&cluster, "yann", "yann's password").await.unwrap();
    let theirs = client(&cluster, Some(&other))
        .query("{ appPasswords { id } }", json!({}))
        .await
        .unwrap();
    assert_eq!(theirs["appPasswords"], json!([]));
    let r = client(&cluster, Some(&other))
        .raw(
            "mutation($id: ID!) { revokeAppPassword(id: $id) }",
            json!({ "id": id }),
        )
        .await
        .unwrap();
    assert_eq!(
        r.pointer("/errors/0/extensions/code")
            .and_then(Value::as_str),
        Some("NOT_FOUND"),
        "{r}"
    );
    assert_eq!(ping(secret.clone()).await["status"], "ok", "still valid");
    let revoked = rondo_user(&cluster, &["app-password", "revoke", "zoe", &id], "");
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let after = ping(secret).await;
    assert_eq!(after["error"]["code"], 44, "{after}");
    let unknown = rondo_user(&cluster, &["app-password", "list", "nobody"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account named"));
}
