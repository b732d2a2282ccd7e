//! `millrace serve` refuses an admin token file that others may open, before it loads or
//! binds anything, and takes one that only its owner may.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

/// `serve` with a token file of `mode`, bound to an address that cannot be bound: the error
/// tells how far it got.
fn serve_with_token(mode: u32) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("serve")
        .arg("--registry")
        .arg(dir.path().join("registry"))
        .args(["--bind", "127.0.0.1:99999", "--admin-token-file"])
        .arg(&token)
        .output()
        .unwrap()
}

#[test]
fn a_token_others_may_read_is_refused() {
    for mode in [0o644, 0o604, 0o602] {
        let out = serve_with_token(mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("is open to others"), "{mode:o}: {stderr}");
        assert!(!stderr.contains("binding"), "{mode:o}: {stderr}");
    }
}

#[test]
fn a_token_only_its_owner_and_group_may_read_is_taken() {
    for mode in [0o600, 0o640, 0o400] {
        let out = serve_with_token(mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the address cannot be bound");
        assert!(!stderr.contains("open to others"), "{mode:o}: {stderr}");
        assert!(
            stderr.contains("binding 127.0.0.1:99999"),
            "{mode:o}: {stderr}"
        );
    }
}
