//! The brokers a job's or a server's Kafka clients reach, with the librdkafka settings (TLS,
//! SASL) given inline and in a properties file; the file holds the secrets, so it is read as one
//! ([`read_secret`]).

use crate::secret::read_secret;
use millrace_connectors::kafka::{parse_properties, Brokers};
use std::collections::BTreeMap;
use std::path::Path;

/// The brokers at `servers`, reached with `inline` settings and those of `file`; `what` names
/// the settings' origin in problems (`[source] kafka`, `--kafka-property`).
///
/// # Errors
///
/// Every problem at once: the file unreadable, open to others or malformed, a key given in
/// both places, a setting millrace chooses itself or librdkafka refuses.
pub fn secured_brokers(
    servers: &str,
    (what, inline): (&str, &BTreeMap<String, String>),
    file: Option<&Path>,
) -> Result<Brokers, Vec<String>> {
    let mut properties = inline.clone();
    if let Some(path) = file {
        let text = read_secret(path, "Kafka client properties").map_err(|e| vec![e])?;
        let from_file = parse_properties(&text).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
        })?;
        let mut twice = Vec::new();
        for (key, value) in from_file {
            if properties.insert(key.clone(), value).is_some() {
                twice.push(format!(
                    "`{key}` is given both in {what} and in {}",
                    path.display()
                ));
            }
        }
        if !twice.is_empty() {
            return Err(twice);
        }
    }
    Brokers::new(servers).with_properties(properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn inline_and_file_settings_join_and_conflicts_are_refused() {
        let inline: BTreeMap<String, String> =
            [("security.protocol".to_owned(), "SASL_SSL".to_owned())].into();
        let secrets = file("sasl.mechanism=PLAIN\nsasl.password=s3cret\n", 0o600);
        let brokers =
            secured_brokers("b:9092", ("[source] kafka", &inline), Some(secrets.path())).unwrap();
        let config = brokers.client_config();
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));

        let clash = file("security.protocol=SSL\n", 0o600);
        let problems =
            secured_brokers("b:9092", ("[source] kafka", &inline), Some(clash.path())).unwrap_err();
        assert!(
            problems[0].contains("`security.protocol` is given both"),
            "{problems:?}"
        );

        let open = file("sasl.password=s3cret\n", 0o644);
        let problems =
            secured_brokers("b:9092", ("[source] kafka", &inline), Some(open.path())).unwrap_err();
        assert!(problems[0].contains("open to others"), "{problems:?}");
    }
}
