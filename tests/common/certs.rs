//! Self-signed certificates for the TLS tests (RTMPS, HTTPS, Chromium over HTTPS), made by the
//! openssl CLI at test time.

use std::path::Path;
use std::time::Duration;

use super::run_tool;

/// Write a self-signed P-256 certificate for 127.0.0.1/localhost with common name `cn` to
/// `dir/cert.pem` and `dir/key.pem`, replacing them atomically (rename), as an ACME client does.
pub fn make_cert(dir: &Path, cn: &str) {
    let (tmp_cert, tmp_key) = (dir.join("new-cert.pem"), dir.join("new-key.pem"));
    let subj = format!("/CN={cn}");
    let ran = run_tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            tmp_key.to_str().unwrap(),
            "-out",
            tmp_cert.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(ran.status.success(), "openssl req failed: {}", ran.stderr);
    // Key first, then certificate: the server may see the new key with the old certificate for
    // a moment, which must be skipped (mismatch), not served.
    std::fs::rename(&tmp_key, dir.join("key.pem")).unwrap();
    std::fs::rename(&tmp_cert, dir.join("cert.pem")).unwrap();
}

/// Base64 SHA-256 of the SubjectPublicKeyInfo of `dir/cert.pem`: what Chromium's
/// `--ignore-certificate-errors-spki-list` takes to trust that one key.
pub fn spki_sha256_base64(dir: &Path) -> String {
    let cert = dir.join("cert.pem");
    let script = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        cert.display()
    );
    let ran = run_tool("sh", &["-c", &script], Duration::from_secs(20));
    assert!(ran.status.success(), "computing the SPKI hash failed: {}", ran.stderr);
    let b64 = ran.stdout.trim().to_string();
    assert_eq!(b64.len(), 44, "a SHA-256 in base64 is 44 characters: {b64:?}");
    b64
}
