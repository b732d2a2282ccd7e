//! The connectors a job file can name by `type`.

/// A connector a job can use, by the name its `type` key gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// The value of `type` that selects it.
    pub name: &'static str,
    /// Whether it is a source or a sink.
    pub role: Role,
    /// One line on what it does.
    pub description: &'static str,
}

/// What a connector does for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It feeds records into the dataflow.
    Source,
    /// It takes records out of the dataflow.
    Sink,
}

/// Every connector, by name.
pub fn registry() -> &'static [ConnectorInfo] {
    &[
        ConnectorInfo {
            name: "kafka",
            role: Role::Source,
            description:
                "a Kafka topic; `bootstrap_servers = \"embedded\"` starts a broker in-process",
        },
        ConnectorInfo {
            name: "kafka",
            role: Role::Sink,
            description: "a Kafka topic (dead letters)",
        },
    ]
}

/// Looks a connector up by role and name.
pub fn find(role: Role, name: &str) -> Option<&'static ConnectorInfo> {
    registry().iter().find(|c| c.role == role && c.name == name)
}
