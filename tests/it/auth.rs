//! AuthService and AdminService end to end, with every forged-token case and bad input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgechat::auth::token;
use edgechat::client;
use edgechat::proto;
use tonic::Code;

use crate::support::{TestServer, expect_code, forge, raw_call};

const PW: &str = "correct horse battery";

both_transports! {
async fn register_login_whoami_refresh_logout() {
    let s = TestServer::start().await;
    let reg = s.register("Alice").await;
    let user = reg.user.clone().unwrap();
    assert_eq!(user.username, "alice", "usernames are folded to lowercase");
    assert_eq!(user.role, proto::GlobalRole::Member as i32);
    assert!(reg.access_expires_at_ms > 0);

    let ch = s.channel().await;
    let me = client::auth_client(ch.clone(), Some(&reg.access_token))
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.id, user.id);

    let mut anon = client::auth_client(ch.clone(), None);
    let login = anon
        .login(proto::LoginRequest { username: "ALICE".into(), password: PW.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().id, user.id);

    // Refresh rotates: the new pair works, the old refresh token is spent.
    let r1 = anon
        .refresh(proto::RefreshRequest { refresh_token: login.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r1.refresh_token, login.refresh_token);
    client::auth_client(ch.clone(), Some(&r1.access_token))
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .unwrap();

    // Presenting the spent token again revokes the family: the newest token dies too.
    let m = expect_code(
        anon.refresh(proto::RefreshRequest { refresh_token: login.refresh_token.clone() }).await,
        Code::Unauthenticated,
    );
    assert!(m.contains("already used"), "{m}");
    expect_code(
        anon.refresh(proto::RefreshRequest { refresh_token: r1.refresh_token.clone() }).await,
        Code::Unauthenticated,
    );
    // The other login (the registration's family) is unaffected.
    let r2 = anon
        .refresh(proto::RefreshRequest { refresh_token: reg.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();

    // Logout of this device: its refresh token is dead, the access token lapses at expiry.
    let mut authed = client::auth_client(ch.clone(), Some(&r2.access_token));
    authed
        .logout(proto::LogoutRequest {
            refresh_token: r2.refresh_token.clone(),
            all_devices: false,
        })
        .await
        .unwrap();
    expect_code(
        anon.refresh(proto::RefreshRequest { refresh_token: r2.refresh_token.clone() }).await,
        Code::Unauthenticated,
    );
    authed.who_am_i(proto::WhoAmIRequest {}).await.unwrap();

    // Logout everywhere: every access token ends at once, and every refresh token.
    let other = anon
        .login(proto::LoginRequest { username: "alice".into(), password: PW.into() })
        .await
        .unwrap()
        .into_inner();
    authed
        .logout(proto::LogoutRequest { refresh_token: String::new(), all_devices: true })
        .await
        .unwrap();
    expect_code(authed.who_am_i(proto::WhoAmIRequest {}).await, Code::Unauthenticated);
    expect_code(
        client::auth_client(ch.clone(), Some(&other.access_token))
            .who_am_i(proto::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        anon.refresh(proto::RefreshRequest { refresh_token: other.refresh_token }).await,
        Code::Unauthenticated,
    );
}
}

both_transports! {
async fn a_refresh_token_of_another_user_is_invalid_argument_on_logout() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mut c = client::auth_client(s.channel().await, Some(&alice.access_token));
    let m = expect_code(
        c.logout(proto::LogoutRequest { refresh_token: bob.refresh_token, all_devices: false })
            .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("another user"), "{m}");
}
}

both_transports! {
async fn bad_registrations_get_invalid_argument_or_already_exists() {
    let s = TestServer::start().await;
    let mut c = client::auth_client(s.channel().await, None);
    let reg = |u: &str, p: &str| proto::RegisterRequest {
        username: u.into(),
        password: p.into(),
        display_name: String::new(), ..Default::default() };
    for (u, p, what) in [
        ("", PW, "username"),
        ("ab", PW, "username"),
        (&"a".repeat(33) as &str, PW, "username"),
        ("bad name", PW, "username"),
        ("bad!", PW, "username"),
        ("okname", "", "password"),
        ("okname", "short", "password"),
        ("okname", &"x".repeat(129), "password"),
    ] {
        let m = expect_code(c.register(reg(u, p)).await, Code::InvalidArgument);
        assert!(m.contains(what), "{u:?}/{p:?}: {m}");
    }
    c.register(reg("carol", PW)).await.unwrap();
    let m = expect_code(c.register(reg("CAROL", PW)).await, Code::AlreadyExists);
    assert!(m.contains("taken"), "{m}");
    // The server keeps serving.
    c.register(reg("dave", PW)).await.unwrap();
}
}

both_transports! {
async fn wrong_passwords_are_throttled_without_a_permanent_lockout() {
    let s = TestServer::start().await;
    s.register("erin").await;
    let mut c = client::auth_client(s.channel().await, None);
    let bad = || proto::LoginRequest { username: "erin".into(), password: "wrong password".into() };
    for _ in 0..5 {
        let m = expect_code(c.login(bad()).await, Code::Unauthenticated);
        assert_eq!(m, "wrong username or password");
    }
    let m = expect_code(c.login(bad()).await, Code::ResourceExhausted);
    assert!(m.contains("retry in"), "{m}");
    // Unknown users answer exactly like wrong passwords.
    let m = expect_code(
        c.login(proto::LoginRequest { username: "nobody".into(), password: PW.into() }).await,
        Code::Unauthenticated,
    );
    assert_eq!(m, "wrong username or password");
}
}

both_transports! {
async fn forged_and_broken_tokens_are_unauthenticated() {
    let s = TestServer::start().await;
    let reg = s.register("frank").await;
    let ch = s.channel().await;
    let user_id = reg.user.unwrap().id;
    let kid = s.keyring().active().kid.clone();
    let now = edgechat::clock::now_ms() / 1000;
    let claims = serde_json::json!({
        "iss": "edgechat", "aud": "edgechat", "sub": user_id, "exp": now + 600, "iat": now,
        "jti": "j1", "role": "member", "ver": 0, "typ": "access"
    });
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    // The forging helper itself produces a valid token.
    let good = forge(&s, header.clone(), claims.clone());
    client::auth_client(ch.clone(), Some(&good)).who_am_i(proto::WhoAmIRequest {}).await.unwrap();

    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let real_payload = good.split('.').nth(1).unwrap().to_string();
    let mut cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), real_payload)),
        ("expired", forge(&s, header.clone(), with("exp", serde_json::json!(now - 120)))),
        ("wrong aud", forge(&s, header.clone(), with("aud", serde_json::json!("other")))),
        ("wrong iss", forge(&s, header.clone(), with("iss", serde_json::json!("other")))),
        (
            "float exp",
            forge(&s, header.clone(), with("exp", serde_json::json!((now + 600) as f64 + 0.5))),
        ),
        (
            "string exp",
            forge(&s, header.clone(), with("exp", serde_json::json!((now + 600).to_string()))),
        ),
        ("future iat", forge(&s, header.clone(), with("iat", serde_json::json!(now + 3600)))),
        ("stale version", forge(&s, header.clone(), with("ver", serde_json::json!(7)))),
        ("unknown user", forge(&s, header.clone(), with("sub", serde_json::json!("u0000")))),
        ("refresh typ", forge(&s, header.clone(), with("typ", serde_json::json!("refresh")))),
        (
            "unknown kid",
            forge(&s, serde_json::json!({"alg": "EdDSA", "kid": "nope"}), claims.clone()),
        ),
        ("no kid", forge(&s, serde_json::json!({"alg": "EdDSA"}), claims.clone())),
        ("9 KiB", "a".repeat(9 * 1024)),
        ("garbage", "not-a-jwt".into()),
        ("refresh token as access", reg.refresh_token.clone()),
    ];
    for claim in ["exp", "iat", "iss", "aud", "sub", "jti"] {
        cases.push(("missing claim", forge(&s, header.clone(), without(claim))));
    }
    // Tampered: a valid signature over other claims.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with("role", serde_json::json!("admin")).to_string());
    cases.push(("tampered", parts.join(".")));
    // HS256 signed with the public key bytes.
    let public = s.keyring().active().decoding.try_get_as_bytes().unwrap().to_vec();
    let hs_msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "HS256", "kid": kid}).to_string()),
        real_payload
    );
    let hs_sig = jsonwebtoken::crypto::sign(
        hs_msg.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(&public),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    cases.push(("HS256 with public key", format!("{hs_msg}.{hs_sig}")));

    for (what, t) in &cases {
        let r = client::auth_client(ch.clone(), Some(t)).who_am_i(proto::WhoAmIRequest {}).await;
        let m = expect_code(r, Code::Unauthenticated);
        eprintln!("{what}: {m}");
    }
    // A 64 KiB token does not even fit the 16 KiB header limit: the transport refuses the
    // request before anything decodes it (HTTP/2: RESOURCE_EXHAUSTED; HTTP/3: the header
    // block is refused and the stream reset, which the client reports as UNKNOWN), and the
    // server keeps serving.
    const { assert!(token::MAX_TOKEN_BYTES < 9 * 1024) };
    let huge = "a".repeat(64 * 1024);
    let r = client::auth_client(ch.clone(), Some(&huge)).who_am_i(proto::WhoAmIRequest {}).await;
    let code = r.unwrap_err().code();
    assert!(matches!(code, Code::ResourceExhausted | Code::Unauthenticated | Code::Unknown), "{code:?}");
    client::auth_client(s.channel().await, Some(&good))
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .unwrap();
}
}

#[tokio::test]
async fn missing_duplicate_and_garbage_authorization_metadata() {
    let s = TestServer::start().await;
    let reg = s.register("gina").await;
    let ch = s.channel().await;
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    let call = |values: Vec<&'static str>| {
        let mut req = tonic::Request::new(Vec::<u8>::new());
        for v in values {
            req.metadata_mut().append("authorization", v.parse().unwrap());
        }
        req
    };
    let path = http::uri::PathAndQuery::from_static("/edgechat.v1.AuthService/WhoAmI");
    for values in [vec![], vec!["Basic Zm9vOmJhcg=="], vec!["Bearer"], vec!["garbage"]] {
        grpc.ready().await.unwrap();
        let r = grpc.unary(call(values.clone()), path.clone(), crate::support::RawCodec).await;
        expect_code(r, Code::Unauthenticated);
    }
    // Two authorization headers, even two valid ones.
    let mut req = tonic::Request::new(Vec::<u8>::new());
    let v: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", reg.access_token).parse().unwrap();
    req.metadata_mut().append("authorization", v.clone());
    req.metadata_mut().append("authorization", v);
    grpc.ready().await.unwrap();
    let m = expect_code(
        grpc.unary(req, path.clone(), crate::support::RawCodec).await,
        Code::Unauthenticated,
    );
    assert!(m.contains("more than one"), "{m}");
}

#[tokio::test]
async fn malformed_and_oversized_requests() {
    let s = TestServer::start().await;
    let ch = s.channel().await;
    // A field 1 (username) with an invalid UTF-8 string, and a truncated message.
    for body in [vec![0x0a, 0x02, 0xff, 0xfe], vec![0x0a, 0x10, b'a']] {
        let r = raw_call(ch.clone(), "/edgechat.v1.AuthService/Register", body, None).await;
        expect_code(r, Code::InvalidArgument);
    }
    // 100 KiB: over the 64 KiB message limit.
    let mut big = vec![0x1a];
    let n = 100 * 1024;
    big.extend([(n & 0x7f) as u8 | 0x80, ((n >> 7) & 0x7f) as u8 | 0x80, (n >> 14) as u8]);
    big.extend(std::iter::repeat_n(b'x', n));
    let r = raw_call(ch.clone(), "/edgechat.v1.AuthService/Register", big, None).await;
    expect_code(r, Code::ResourceExhausted);
    // Still serving.
    s.register("henry").await;
}

both_transports! {
async fn registration_closed_and_admin_service() {
    let s = TestServer::start_with(|c| c.auth.default_role = "admin".into()).await;
    let root = s.register("root").await;
    let ch = s.channel().await;
    let mut admin = client::admin_client(ch.clone(), Some(&root.access_token));
    let made = admin
        .create_user(proto::CreateUserRequest {
            username: "ivan".into(),
            password: PW.into(),
            display_name: "Ivan".into(),
            role: proto::GlobalRole::Member as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.display_name, "Ivan");
    let users = admin.list_users(proto::ListUsersRequest {}).await.unwrap().into_inner().users;
    assert_eq!(users.len(), 2);

    let mut anon = client::auth_client(ch.clone(), None);
    let ivan = anon
        .login(proto::LoginRequest { username: "ivan".into(), password: PW.into() })
        .await
        .unwrap()
        .into_inner();
    // Non-admins may not use AdminService.
    let mut as_ivan = client::admin_client(ch.clone(), Some(&ivan.access_token));
    expect_code(as_ivan.list_users(proto::ListUsersRequest {}).await, Code::PermissionDenied);

    // Bad role values.
    for role in [0, 99] {
        expect_code(
            admin.set_user_role(proto::SetUserRoleRequest { user_id: made.id.clone(), role }).await,
            Code::InvalidArgument,
        );
    }
    expect_code(
        admin
            .set_user_role(proto::SetUserRoleRequest {
                user_id: "nobody".into(),
                role: proto::GlobalRole::Guest as i32,
            })
            .await,
        Code::NotFound,
    );
    // A role change ends the user's tokens at once; a refresh gets the new role.
    let u = admin
        .set_user_role(proto::SetUserRoleRequest {
            user_id: made.id.clone(),
            role: proto::GlobalRole::Guest as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.role, proto::GlobalRole::Guest as i32);
    let mut ivan_auth = client::auth_client(ch.clone(), Some(&ivan.access_token));
    expect_code(ivan_auth.who_am_i(proto::WhoAmIRequest {}).await, Code::Unauthenticated);
    let refreshed = anon
        .refresh(proto::RefreshRequest { refresh_token: ivan.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.user.unwrap().role, proto::GlobalRole::Guest as i32);

    // Disabling: tokens die, login and refresh are refused.
    admin
        .disable_user(proto::DisableUserRequest { user_id: made.id.clone(), disabled: true })
        .await
        .unwrap();
    expect_code(
        client::auth_client(ch.clone(), Some(&refreshed.access_token))
            .who_am_i(proto::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        anon.login(proto::LoginRequest { username: "ivan".into(), password: PW.into() }).await,
        Code::PermissionDenied,
    );
    expect_code(
        anon.refresh(proto::RefreshRequest { refresh_token: refreshed.refresh_token }).await,
        Code::Unauthenticated,
    );
    admin
        .disable_user(proto::DisableUserRequest { user_id: made.id.clone(), disabled: false })
        .await
        .unwrap();
    anon.login(proto::LoginRequest { username: "ivan".into(), password: PW.into() }).await.unwrap();

    let closed = TestServer::start_with(|c| c.auth.registration = "closed".into()).await;
    let mut c = client::auth_client(closed.channel().await, None);
    let m = expect_code(
        c.register(proto::RegisterRequest {
            username: "jack".into(),
            password: PW.into(),
            display_name: String::new(), ..Default::default() })
        .await,
        Code::PermissionDenied,
    );
    assert!(m.contains("closed"), "{m}");
}
}

both_transports! {
async fn backup_is_for_admins_and_streams_a_database_file() {
    let s = TestServer::start().await;
    let member = s.register("kate").await;
    let mut c = client::admin_client(s.channel().await, Some(&member.access_token));
    expect_code(c.backup(proto::BackupRequest {}).await.map(|_| ()), Code::PermissionDenied);
    let root = s.admin("root").await;
    let mut admin = client::admin_client(root.ch.clone(), Some(&root.token));
    let mut chunks = admin.backup(proto::BackupRequest {}).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    assert!(bytes.starts_with(b"redb"), "a redb file");
}
}

both_transports! {
// `LookupUsers`: by name (any case) and by id, unknown ones left out, each user once; more
// than 100 in all is INVALID_ARGUMENT; without a token UNAUTHENTICATED.
async fn lookup_users_by_name_and_id() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await.user.unwrap();
    let ch = s.channel().await;
    let mut auth = client::auth_client(ch.clone(), Some(&alice.access_token));
    let mut found = auth
        .lookup_users(proto::LookupUsersRequest {
            usernames: vec!["BOB".into(), "nobody".into()],
            user_ids: vec![bob.id.clone(), "u-unknown".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(found.len(), 1, "{found:?}");
    let b = found.pop().unwrap();
    assert_eq!((b.id, b.username), (bob.id.clone(), "bob".to_string()));

    let many = proto::LookupUsersRequest {
        usernames: (0..60).map(|i| format!("u{i}")).collect(),
        user_ids: (0..41).map(|i| format!("x{i}")).collect(),
    };
    let e = expect_code(auth.lookup_users(many).await, Code::InvalidArgument);
    assert!(e.contains("100"), "{e}");
    let anon = client::auth_client(ch, None)
        .lookup_users(proto::LookupUsersRequest { usernames: vec!["bob".into()], user_ids: vec![] })
        .await;
    expect_code(anon, Code::Unauthenticated);
}
}
