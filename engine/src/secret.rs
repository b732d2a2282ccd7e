//! Secrets kept in files (the admin token, the registry key): read once at start, refused when
//! others may open the file, as ssh refuses such a private key. A secret anyone on the host can
//! read guards nothing; group access stays allowed, as a Kubernetes secret mounted for an
//! `fsGroup` has it.

use std::path::Path;

/// The secret in `path` (`what` names it in errors): the file's text, trimmed.
///
/// # Errors
///
/// When the file cannot be read, others may open it, or it holds nothing.
pub fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("reading the {what} {shown}: {e}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(cannot)?
            .permissions()
            .mode();
        if mode & 0o007 != 0 {
            return Err(format!(
                "the {what} file {shown} is open to others (mode {:o}); `chmod o-rwx` it",
                mode & 0o777
            ));
        }
    }
    let secret = std::fs::read_to_string(path).map_err(cannot)?;
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(format!("the {what} file {shown} is empty"));
    }
    Ok(secret.to_owned())
}
