//! Tokens other services can verify, and tokens an outside issuer signs: edgechat's public
//! keys as JWKS on the metrics listener and from `edgechat keys jwks`; `[auth] trusted_keys`
//! (a JWKS file) makes a token signed by another Ed25519 key authenticate, and a JWKS file with
//! a key that cannot be trusted stops the server naming the key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use edgechat::{client, proto};

use crate::support::{TestServer, edgechat_bin};

/// A token for `user_id` signed by `key` under `kid`, with edgechat's claims.
fn outside_token(key: &ed25519_dalek::SigningKey, kid: &str, user_id: &str) -> String {
    let now = edgechat::clock::now_ms() / 1000;
    let claims = serde_json::json!({
        "iss": "edgechat", "aud": "edgechat", "sub": user_id, "exp": now + 600, "iat": now,
        "jti": "outside-1", "role": "member", "ver": 0, "typ": "access"
    });
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = key.to_pkcs8_der().unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let sig =
        jsonwebtoken::crypto::sign(msg.as_bytes(), &enc, jsonwebtoken::Algorithm::EdDSA).unwrap();
    format!("{msg}.{sig}")
}

fn jwk(key: &ed25519_dalek::SigningKey, kid: &str) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    })
}

async fn an_outside_issuers_token_authenticates_and_the_jwks_is_served() {
    let outside = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let untrusted = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let doc = serde_json::json!({ "keys": [jwk(&outside, "idp-2026")] });
    let s = TestServer::start_with(|c| {
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let file = std::path::Path::new(&c.data_dir).join("idp.jwks.json");
        std::fs::write(file, doc.to_string()).unwrap();
        c.auth.trusted_keys = vec!["idp.jwks.json".into()];
        c.metrics.listen = "127.0.0.1:0".into();
    })
    .await;
    let alice = s.register("alice").await.user.unwrap();
    let ch = s.channel().await;
    let token = outside_token(&outside, "idp-2026", &alice.id);
    let me = client::auth_client(ch.clone(), Some(&token))
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .expect("a trusted issuer's token authenticates");
    assert_eq!(me.into_inner().id, alice.id);
    // The same claims under a key nobody trusts, or a trusted kid with another key's
    // signature, are refused.
    for token in [
        outside_token(&untrusted, "other", &alice.id),
        outside_token(&untrusted, "idp-2026", &alice.id),
    ] {
        let r =
            client::auth_client(ch.clone(), Some(&token)).who_am_i(proto::WhoAmIRequest {}).await;
        crate::support::expect_code(r, tonic::Code::Unauthenticated);
    }
    // The JWKS document on the metrics listener: edgechat's own key and the trusted one.
    let (status, body) =
        crate::metrics::get(s.metrics_addr().unwrap(), "/.well-known/jwks.json").await;
    assert!(status.contains("200"), "{status}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kids: Vec<&str> =
        doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    let own = s.keyring().active().kid.clone();
    assert!(kids.contains(&own.as_str()) && kids.contains(&"idp-2026"), "{kids:?}");
    for k in doc["keys"].as_array().unwrap() {
        assert_eq!(
            (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str()),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
        );
        assert!(k.get("d").is_none(), "no private part is ever published");
    }
    // The published x verifies edgechat's own tokens (what another service would do).
    let own_jwk =
        doc["keys"].as_array().unwrap().iter().find(|k| k["kid"] == own.as_str()).unwrap();
    let x = URL_SAFE_NO_PAD.decode(own_jwk["x"].as_str().unwrap()).unwrap();
    let reg = s.register("bob").await;
    let parts: Vec<&str> = reg.access_token.split('.').collect();
    let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(parts[2]).unwrap().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    vk.verify_strict(signed.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig)).unwrap();
}

both_transports!(an_outside_issuers_token_authenticates_and_the_jwks_is_served);

#[tokio::test]
async fn untrustworthy_jwks_files_stop_the_server_naming_the_key() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut rsa = jwk(&key, "rsa-1");
    rsa["kty"] = "RSA".into();
    let mut private = jwk(&key, "leaky");
    private["d"] = "secret".into();
    let cases = [
        (serde_json::json!({"keys": [jwk(&key, "ok"), rsa]}), "key `rsa-1`", "not an Ed25519 key"),
        (
            serde_json::json!({"keys": [jwk(&key, "twice"), jwk(&key, "twice")]}),
            "key `twice`",
            "twice",
        ),
        (serde_json::json!({"keys": [private]}), "key `leaky`", "private key"),
        (
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}),
            "key 0",
            "kid",
        ),
        (serde_json::json!({"nothing": []}), "jwks.json", "no `keys` array"),
    ];
    for (doc, names, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = edgechat_bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("EDGECHAT_AUTH_TRUSTED_KEYS", &file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{doc} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("auth.trusted_keys") && err.contains(names) && err.contains(says),
            "{doc}: {err}"
        );
    }
    // `edgechat keys jwks` prints the data directory's public keys.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(
        edgechat_bin().arg("init").arg("--data-dir").arg(&data).output().unwrap().status.success()
    );
    let out = edgechat_bin().args(["keys", "jwks", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kid = doc["keys"][0]["kid"].as_str().unwrap();
    let files: Vec<String> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(files.iter().any(|f| f.contains(kid)), "{kid} not among {files:?}");
    // With `[auth] trusted_keys` from the environment, as `serve` reads it, they are listed too.
    let outside = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let file = dir.path().join("idp.json");
    std::fs::write(&file, serde_json::json!({"keys": [jwk(&outside, "idp")]}).to_string()).unwrap();
    let out = edgechat_bin()
        .args(["keys", "jwks", "--data-dir"])
        .arg(&data)
        .env("EDGECHAT_AUTH_TRUSTED_KEYS", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2, "{doc}");
}
