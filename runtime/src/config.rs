//! The group's `container.json`, read once at start-up by the container's runner and kept by
//! the host (docs/format.md §9).
//!
//! Inside the container the file sits at [`CONTAINER_JSON_PATH`] (mounted read-only); that is a
//! convention, so every function here takes the path it should read.
//!
//! Upstream silently used the defaults when the file was unreadable or malformed. Here:
//!
//! - a missing field gets its default, and `null` counts as missing;
//! - an unknown field is kept in `extra` (so a newer host's fields survive a round trip) and
//!   otherwise ignored;
//! - malformed JSON, a wrong type or an invalid value is an error naming the file and the field
//!   path (`mcpServers.search.args[1]`), never the defaults;
//! - a missing file is its own error variant, [`ConfigError::NotFound`]: the caller decides
//!   whether that means "use [`ContainerConfig::default`]";
//! - a file over [`MAX_CONFIG_BYTES`] is refused before it is parsed.
//!
//! This project's own fields (not upstream's), all optional:
//!
//! - `pollIntervalIdleMs` / `pollIntervalActiveMs`: the container's poll intervals (default
//!   1000 and 250 ms, at least 1);
//! - `handlerTimeoutMs`: the deadline of one batch's handler, in milliseconds (default
//!   [`DEFAULT_HANDLER_TIMEOUT_MS`], 30 minutes; at least 1, at most
//!   [`MAX_HANDLER_TIMEOUT_MS`], 2 hours). Time spent in a tool with a declared timeout
//!   ([`crate::container::HandlerContext::with_tool`]), up to that timeout, does not count
//!   against it, but no batch gets more than 2 hours after it was claimed. Past the
//!   deadline the container stops vouching for itself on `.heartbeat` (the host's liveness
//!   rules then kill it) and its run ends with
//!   [`crate::error::RuntimeError::HandlerTimedOut`] if the handler ever returns. See
//!   [`crate::container`].
//!
//! ```
//! use sessionbus_runtime::config::{ContainerConfig, Skills};
//!
//! let cfg = ContainerConfig::from_str(
//!     r#"{ "provider": "Codex", "maxMessagesPerPrompt": 3, "skills": ["pdf"] }"#,
//!     "container.json",
//! ).unwrap();
//! assert_eq!(cfg.provider_key(), "codex");
//! assert_eq!(cfg.continuation_key(), "continuation:codex");
//! assert_eq!(cfg.max_messages_per_prompt.get(), 3);
//! assert_eq!(cfg.skills, Skills::Named(vec!["pdf".into()]));
//!
//! let err = ContainerConfig::from_str(r#"{ "maxMessagesPerPrompt": "ten" }"#, "container.json")
//!     .unwrap_err();
//! assert!(err.to_string().contains("maxMessagesPerPrompt"));
//! ```

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the runner finds the file inside the container (a convention, not an environment
/// variable).
pub const CONTAINER_JSON_PATH: &str = "/workspace/agent/container.json";

/// The largest `container.json` that is read at all (1 MiB); a bigger file is refused before
/// parsing with [`ConfigError::TooLarge`].
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The provider when `provider` is absent.
pub const DEFAULT_PROVIDER: &str = "claude";

/// `maxMessagesPerPrompt` when absent: at most this many messages are handed to the agent per
/// prompt.
pub const DEFAULT_MAX_MESSAGES_PER_PROMPT: NonZeroU32 = nonzero_u32(10);

/// `pollIntervalIdleMs` when absent (this project's addition, not upstream's).
pub const DEFAULT_POLL_INTERVAL_IDLE_MS: NonZeroU64 = nonzero_u64(1000);

/// `pollIntervalActiveMs` when absent (this project's addition, not upstream's).
pub const DEFAULT_POLL_INTERVAL_ACTIVE_MS: NonZeroU64 = nonzero_u64(250);

/// `handlerTimeoutMs` when absent (this project's addition): 30 minutes per batch, as long as
/// the host's heartbeat ceiling.
pub const DEFAULT_HANDLER_TIMEOUT_MS: NonZeroU64 = nonzero_u64(30 * 60 * 1000);

/// The largest `handlerTimeoutMs` accepted, and the most any batch gets however a tool widens
/// its deadline: 2 hours, the longest tool timeout the host honours
/// ([`crate::liveness::MAX_DECLARED_TIMEOUT_MS`]).
pub const MAX_HANDLER_TIMEOUT_MS: u64 = 2 * 60 * 60 * 1000;

// Only evaluated in const items: a bad constant stops the build, never a running process.
#[allow(clippy::panic)]
const fn nonzero_u32(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(v) => v,
        None => panic!("zero default"),
    }
}

// Only evaluated in const items: a bad constant stops the build, never a running process.
#[allow(clippy::panic)]
const fn nonzero_u64(n: u64) -> NonZeroU64 {
    match NonZeroU64::new(n) {
        Some(v) => v,
        None => panic!("zero default"),
    }
}

/// A group's `container.json`, typed. Field names are camelCase on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerConfig {
    /// The agent provider, e.g. `claude` (the default). Must not be blank. See
    /// [`ContainerConfig::provider_key`] for the form used in keys.
    #[serde(deserialize_with = "de_provider")]
    pub provider: String,
    /// The assistant's display name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assistant_name: Option<String>,
    /// The group's display name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The agent group's id, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_group_id: Option<String>,
    /// How many messages at most are handed to the agent in one prompt (default 10, at least 1;
    /// `0` is an error).
    #[serde(deserialize_with = "de_max_messages")]
    pub max_messages_per_prompt: NonZeroU32,
    /// MCP servers the runner starts, by name.
    #[serde(deserialize_with = "null_as_default")]
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// The model to ask the provider for, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The reasoning effort to ask for, if set (passed through as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// Host side: extra packages baked into the group's image.
    #[serde(deserialize_with = "null_as_default")]
    pub packages: Packages,
    /// Host side: the image tag to run, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// Host side: extra bind mounts for the container.
    #[serde(deserialize_with = "null_as_default")]
    pub additional_mounts: Vec<AdditionalMount>,
    /// Which shared skills the group gets (default: all of them).
    #[serde(deserialize_with = "null_as_default")]
    pub skills: Skills,
    /// This project's addition: the container's poll interval while idle, in milliseconds
    /// (default 1000, at least 1).
    #[serde(deserialize_with = "de_poll_idle")]
    pub poll_interval_idle_ms: NonZeroU64,
    /// This project's addition: the container's poll interval while a conversation is active,
    /// in milliseconds (default 250, at least 1).
    #[serde(deserialize_with = "de_poll_active")]
    pub poll_interval_active_ms: NonZeroU64,
    /// This project's addition: the deadline of one batch's handler, in milliseconds (default
    /// [`DEFAULT_HANDLER_TIMEOUT_MS`], at least 1, at most [`MAX_HANDLER_TIMEOUT_MS`]). See the
    /// module documentation.
    #[serde(deserialize_with = "de_handler_timeout")]
    pub handler_timeout_ms: NonZeroU64,
    /// Fields this version does not know, kept as they were and otherwise ignored.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One MCP server entry of `mcpServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    /// The program to run (required).
    pub command: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<String>,
    /// Extra environment variables for it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: BTreeMap<String, String>,
    /// Text added to the agent's instructions about this server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Fields this version does not know, kept and ignored.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Host side: packages installed into the group's image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Packages {
    /// Debian packages.
    #[serde(deserialize_with = "null_as_default")]
    pub apt: Vec<String>,
    /// npm packages.
    #[serde(deserialize_with = "null_as_default")]
    pub npm: Vec<String>,
    /// Fields this version does not know, kept and ignored.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Host side: one extra bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalMount {
    /// The folder on the host (required).
    pub host_path: PathBuf,
    /// Where it appears in the container; `None` leaves the choice to the host (upstream used
    /// the host folder's base name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// Whether the mount is read-only. Defaults to `true` when absent (the safe choice, as
    /// upstream did).
    #[serde(default = "default_true", deserialize_with = "de_readonly")]
    pub readonly: bool,
    /// Fields this version does not know, kept and ignored.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Which shared skills a group gets: `"all"` on disk, or a list of skill names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Skills {
    /// Every skill folder present in the shared skills folder at sync time (the default).
    #[default]
    All,
    /// Exactly these skills. When read from JSON each name must pass
    /// [`crate::skills::validate_skill_name`], and duplicates are dropped (order kept otherwise).
    Named(Vec<String>),
}

impl Serialize for Skills {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Skills::All => s.serialize_str("all"),
            Skills::Named(names) => names.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Skills {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Skills;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or a list of skill names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Skills, E> {
                if v == "all" {
                    Ok(Skills::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skills, A::Error> {
                let mut names: Vec<String> = Vec::new();
                while let Some(SkillName(name)) = seq.next_element()? {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Ok(Skills::Named(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of a `skills` list, checked with [`crate::skills::validate_skill_name`] so that a
/// name like `../etc` is an error naming `skills[i]`.
struct SkillName(String);

impl<'de> Deserialize<'de> for SkillName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match crate::skills::validate_skill_name(&name) {
            Ok(()) => Ok(SkillName(name)),
            Err(reason) => Err(de::Error::custom(format_args!(
                "skill name {name:?} is refused: it {reason}"
            ))),
        }
    }
}

fn default_true() -> bool {
    true
}

/// `null` means "absent": the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

macro_rules! null_or {
    ($name:ident, $ty:ty, $default:expr) => {
        /// `null` means "absent": the field's own default.
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            Ok(Option::<$ty>::deserialize(d)?.unwrap_or_else(|| $default))
        }
    };
}

null_or!(de_provider, String, DEFAULT_PROVIDER.to_owned());
null_or!(de_max_messages, NonZeroU32, DEFAULT_MAX_MESSAGES_PER_PROMPT);
null_or!(de_poll_idle, NonZeroU64, DEFAULT_POLL_INTERVAL_IDLE_MS);
null_or!(de_poll_active, NonZeroU64, DEFAULT_POLL_INTERVAL_ACTIVE_MS);
null_or!(de_handler_timeout, NonZeroU64, DEFAULT_HANDLER_TIMEOUT_MS);
null_or!(de_readonly, bool, true);

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            provider: DEFAULT_PROVIDER.to_owned(),
            assistant_name: None,
            group_name: None,
            agent_group_id: None,
            max_messages_per_prompt: DEFAULT_MAX_MESSAGES_PER_PROMPT,
            mcp_servers: BTreeMap::new(),
            model: None,
            effort: None,
            packages: Packages::default(),
            image_tag: None,
            additional_mounts: Vec::new(),
            skills: Skills::All,
            poll_interval_idle_ms: DEFAULT_POLL_INTERVAL_IDLE_MS,
            poll_interval_active_ms: DEFAULT_POLL_INTERVAL_ACTIVE_MS,
            handler_timeout_ms: DEFAULT_HANDLER_TIMEOUT_MS,
            extra: BTreeMap::new(),
        }
    }
}

/// Why a `container.json` could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not exist (the caller decides whether the defaults apply).
    #[error("{}: container config not found", path.display())]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The file is bigger than [`MAX_CONFIG_BYTES`]; it was not parsed.
    #[error("{}: container config is {size} bytes, more than the {limit}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes (at least `limit + 1`).
        size: u64,
        /// The limit, [`MAX_CONFIG_BYTES`].
        limit: u64,
    },
    /// The path exists but is not a regular file (a folder, a device, a pipe).
    #[error("{}: container config is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading the file failed.
    #[error("{}: cannot read container config: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON (or not UTF-8, or empty).
    #[error("{}: container config is not valid JSON: {message} (line {line}, column {column})", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// Valid JSON, but a field has the wrong type or an impossible value (including a missing
    /// required field of a nested object, and `maxMessagesPerPrompt: 0`).
    #[error("{}: container config field `{field}`: {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field's path, e.g. `mcpServers.search.args[1]`; `.` for the document itself.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A field parsed but breaks a rule of its own (e.g. a blank `provider`).
    #[error("{}: container config field `{field}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field's path.
        field: String,
        /// The broken rule.
        reason: String,
    },
}

impl ContainerConfig {
    /// Reads and parses the file at `path`. See the module documentation for what is an error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use sessionbus_schema::untrusted::fs::{open_regular_file, UntrustedFsError};
        // Opened without following a link or blocking on a FIFO, and checked to be a regular
        // file on the descriptor itself: whoever could write the folder cannot swap the file
        // for something else between a check and the read.
        let (file, info) = match open_regular_file(path) {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => {
                return Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(UntrustedFsError::WrongKind { .. }) => {
                return Err(ConfigError::NotAFile {
                    path: path.to_path_buf(),
                })
            }
            Err(UntrustedFsError::Io { source, .. }) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })
            }
        };
        let too_large = |size| ConfigError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_CONFIG_BYTES,
        };
        if info.size > MAX_CONFIG_BYTES {
            return Err(too_large(info.size));
        }
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        // The file may grow between the size check and the read: never read past the limit.
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        Self::parse(&mut serde_json::Deserializer::from_slice(&bytes), path)
    }

    /// Parses `text` as a `container.json`; `path_for_messages` only names the source in errors.
    pub fn from_str(text: &str, path_for_messages: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path_for_messages.as_ref();
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: text.len() as u64,
                limit: MAX_CONFIG_BYTES,
            });
        }
        Self::parse(&mut serde_json::Deserializer::from_str(text), path)
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        de: &mut serde_json::Deserializer<R>,
        path: &Path,
    ) -> Result<Self, ConfigError> {
        let parsed: Result<Self, _> = serde_path_to_error::deserialize(&mut *de);
        let cfg = match parsed {
            Ok(cfg) => cfg,
            Err(e) => return Err(json_error(e, path)),
        };
        // Trailing garbage after the object is a syntax error, as in `serde_json::from_str`.
        if let Err(e) = de.end() {
            return Err(syntax_error(&e, path));
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.provider.trim().is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "provider".into(),
                reason: "must not be blank".into(),
            });
        }
        if self.handler_timeout_ms.get() > MAX_HANDLER_TIMEOUT_MS {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "handlerTimeoutMs".into(),
                reason: format!(
                    "must be at most {MAX_HANDLER_TIMEOUT_MS} (2 hours), not {}",
                    self.handler_timeout_ms
                ),
            });
        }
        Ok(())
    }

    /// The provider as used in keys: trimmed and lower-cased (`Claude` gives `claude`).
    pub fn provider_key(&self) -> String {
        self.provider.trim().to_lowercase()
    }

    /// The session-state key of this provider's conversation continuation:
    /// `continuation:<provider_key>`.
    pub fn continuation_key(&self) -> String {
        format!("continuation:{}", self.provider_key())
    }

    /// [`ContainerConfig::poll_interval_idle_ms`] as a duration.
    pub fn poll_interval_idle(&self) -> Duration {
        Duration::from_millis(self.poll_interval_idle_ms.get())
    }

    /// [`ContainerConfig::poll_interval_active_ms`] as a duration.
    pub fn poll_interval_active(&self) -> Duration {
        Duration::from_millis(self.poll_interval_active_ms.get())
    }

    /// [`ContainerConfig::handler_timeout_ms`] as a duration, at most
    /// [`MAX_HANDLER_TIMEOUT_MS`] (a value built in code, not read from a file, is capped here).
    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms.get().min(MAX_HANDLER_TIMEOUT_MS))
    }
}

fn syntax_error(e: &serde_json::Error, path: &Path) -> ConfigError {
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: bare_message(e),
    }
}

/// serde_json's message without its trailing " at line L column C".
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>, path: &Path) -> ConfigError {
    let field = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => ConfigError::Field {
            path: path.to_path_buf(),
            field,
            message: inner.to_string(),
        },
        serde_json::error::Category::Io => ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(inner.to_string()),
        },
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            syntax_error(&inner, path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ContainerConfig, ConfigError> {
        ContainerConfig::from_str(text, "/g/container.json")
    }

    fn field_error(text: &str) -> (String, String) {
        match parse(text) {
            Err(ConfigError::Field { field, message, .. }) => (field, message),
            other => panic!("expected a field error for {text}, got {other:?}"),
        }
    }

    #[test]
    fn empty_object_is_all_defaults() {
        let cfg = parse("{}").unwrap();
        assert_eq!(cfg, ContainerConfig::default());
        assert_eq!(cfg.provider, "claude");
        assert_eq!(cfg.max_messages_per_prompt.get(), 10);
        assert_eq!(cfg.skills, Skills::All);
        assert_eq!(cfg.poll_interval_idle(), Duration::from_millis(1000));
        assert_eq!(cfg.poll_interval_active(), Duration::from_millis(250));
        assert_eq!(cfg.handler_timeout(), Duration::from_secs(30 * 60));
        assert!(cfg.mcp_servers.is_empty() && cfg.additional_mounts.is_empty());
    }

    #[test]
    fn every_field_is_read_from_camel_case() {
        let cfg = parse(
            r#"{
              "provider": "Claude",
              "assistantName": "Andy",
              "groupName": "Family",
              "agentGroupId": "ag-1",
              "maxMessagesPerPrompt": 4,
              "mcpServers": {
                "search": { "command": "node", "args": ["s.js", "--x"], "env": {"K": "v"},
                            "instructions": "use it" },
                "bare": { "command": "bare-bin" }
              },
              "model": "opus",
              "effort": "high",
              "packages": { "apt": ["ffmpeg"], "npm": ["left-pad"] },
              "imageTag": "v2",
              "additionalMounts": [
                { "hostPath": "/srv/data", "containerPath": "data", "readonly": false },
                { "hostPath": "/srv/ro" }
              ],
              "skills": ["pdf", "browser", "pdf"],
              "pollIntervalIdleMs": 2000,
              "pollIntervalActiveMs": 100,
              "handlerTimeoutMs": 60000
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.provider, "Claude");
        assert_eq!(cfg.provider_key(), "claude");
        assert_eq!(cfg.assistant_name.as_deref(), Some("Andy"));
        assert_eq!(cfg.group_name.as_deref(), Some("Family"));
        assert_eq!(cfg.agent_group_id.as_deref(), Some("ag-1"));
        assert_eq!(cfg.max_messages_per_prompt.get(), 4);
        let search = &cfg.mcp_servers["search"];
        assert_eq!(search.command, "node");
        assert_eq!(search.args, ["s.js", "--x"]);
        assert_eq!(search.env["K"], "v");
        assert_eq!(search.instructions.as_deref(), Some("use it"));
        let bare = &cfg.mcp_servers["bare"];
        assert!(bare.args.is_empty() && bare.env.is_empty() && bare.instructions.is_none());
        assert_eq!(cfg.model.as_deref(), Some("opus"));
        assert_eq!(cfg.effort.as_deref(), Some("high"));
        assert_eq!(cfg.packages.apt, ["ffmpeg"]);
        assert_eq!(cfg.packages.npm, ["left-pad"]);
        assert_eq!(cfg.image_tag.as_deref(), Some("v2"));
        assert_eq!(cfg.additional_mounts[0].host_path, Path::new("/srv/data"));
        assert_eq!(
            cfg.additional_mounts[0].container_path.as_deref(),
            Some("data")
        );
        assert!(!cfg.additional_mounts[0].readonly);
        assert!(
            cfg.additional_mounts[1].readonly,
            "readonly defaults to true"
        );
        assert_eq!(cfg.additional_mounts[1].container_path, None);
        assert_eq!(
            cfg.skills,
            Skills::Named(vec!["pdf".into(), "browser".into()])
        );
        assert_eq!(cfg.poll_interval_idle_ms.get(), 2000);
        assert_eq!(cfg.poll_interval_active_ms.get(), 100);
        assert_eq!(cfg.handler_timeout_ms.get(), 60_000);
        assert!(cfg.extra.is_empty());
    }

    #[test]
    fn null_means_absent() {
        let cfg = parse(
            r#"{"provider": null, "maxMessagesPerPrompt": null, "skills": null,
                "mcpServers": null, "packages": null, "additionalMounts": null, "model": null,
                "pollIntervalIdleMs": null, "pollIntervalActiveMs": null,
                "handlerTimeoutMs": null}"#,
        )
        .unwrap();
        assert_eq!(cfg, ContainerConfig::default());
        let cfg = parse(r#"{"additionalMounts": [{"hostPath": "/a", "readonly": null}]}"#).unwrap();
        assert!(cfg.additional_mounts[0].readonly);
    }

    #[test]
    fn unknown_fields_are_kept_and_ignored() {
        let cfg = parse(
            r#"{"provider": "claude", "futureThing": {"a": 1}, "mcpServers": {"s": {"command": "c", "type": "stdio"}}}"#,
        )
        .unwrap();
        assert_eq!(cfg.extra["futureThing"], serde_json::json!({"a": 1}));
        assert_eq!(cfg.mcp_servers["s"].extra["type"], "stdio");
        // They survive a round trip.
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains("\"futureThing\""), "{text}");
        assert_eq!(parse(&text).unwrap(), cfg);
    }

    #[test]
    fn serialised_defaults_read_back_the_same() {
        let cfg = ContainerConfig {
            skills: Skills::Named(vec!["a".into()]),
            model: Some("m".into()),
            ..ContainerConfig::default()
        };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains("\"maxMessagesPerPrompt\":10"), "{text}");
        assert!(text.contains("\"skills\":[\"a\"]"), "{text}");
        assert!(
            !text.contains("assistantName"),
            "None fields are left out: {text}"
        );
        assert_eq!(parse(&text).unwrap(), cfg);
        let all = serde_json::to_string(&ContainerConfig::default()).unwrap();
        assert!(all.contains("\"skills\":\"all\""), "{all}");
    }

    #[test]
    fn wrong_types_name_the_field_path() {
        let cases = [
            (r#"{"maxMessagesPerPrompt": "ten"}"#, "maxMessagesPerPrompt"),
            (r#"{"maxMessagesPerPrompt": -1}"#, "maxMessagesPerPrompt"),
            (r#"{"maxMessagesPerPrompt": 2.5}"#, "maxMessagesPerPrompt"),
            (r#"{"provider": 7}"#, "provider"),
            (
                r#"{"mcpServers": {"s": {"command": "c", "args": ["a", 3]}}}"#,
                "mcpServers.s.args[1]",
            ),
            (r#"{"mcpServers": {"s": {"args": []}}}"#, "mcpServers.s"),
            (r#"{"mcpServers": []}"#, "mcpServers"),
            (r#"{"packages": {"apt": "ffmpeg"}}"#, "packages.apt"),
            (
                r#"{"additionalMounts": [{"hostPath": "/a"}, {"readonly": true}]}"#,
                "additionalMounts[1]",
            ),
            (
                r#"{"additionalMounts": [{"hostPath": "/a", "readonly": "yes"}]}"#,
                "additionalMounts[0].readonly",
            ),
            (r#"{"skills": "some"}"#, "skills"),
            (r#"{"skills": ["a", 1]}"#, "skills[1]"),
            (r#"{"skills": 3}"#, "skills"),
            (r#"{"skills": ["ok", "../etc"]}"#, "skills[1]"),
            (r#"{"skills": ["a/b"]}"#, "skills[0]"),
            (r#"{"skills": ["pdf", "", "x"]}"#, "skills[1]"),
            (r#"{"pollIntervalIdleMs": 0}"#, "pollIntervalIdleMs"),
            (
                r#"{"pollIntervalActiveMs": "fast"}"#,
                "pollIntervalActiveMs",
            ),
            (r#"{"handlerTimeoutMs": 0}"#, "handlerTimeoutMs"),
            (r#"{"handlerTimeoutMs": -5}"#, "handlerTimeoutMs"),
            (r#"{"handlerTimeoutMs": "1h"}"#, "handlerTimeoutMs"),
            (r#"{"model": 1}"#, "model"),
            (r#"[]"#, "."),
            (r#""all""#, "."),
        ];
        for (text, want) in cases {
            let (field, message) = field_error(text);
            assert_eq!(field, want, "{text}: {message}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn zero_messages_per_prompt_is_refused_not_defaulted() {
        let err = parse(r#"{"maxMessagesPerPrompt": 0}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/g/container.json"), "{text}");
        assert!(text.contains("maxMessagesPerPrompt"), "{text}");
        assert!(parse(r#"{"maxMessagesPerPrompt": 1}"#).is_ok());
    }

    #[test]
    fn blank_provider_is_invalid() {
        for p in [r#""""#, r#""  ""#] {
            match parse(&format!(r#"{{"provider": {p}}}"#)) {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "provider"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_is_a_syntax_error_with_position() {
        for (text, line) in [
            ("", 1),
            ("{", 1),
            ("{\n \"provider\": claude}", 2),
            ("{} x", 1),
            ("{,}", 1),
        ] {
            match parse(text) {
                Err(ConfigError::Syntax {
                    path,
                    line: l,
                    message,
                    ..
                }) => {
                    assert_eq!(path, Path::new("/g/container.json"));
                    assert_eq!(l, line, "{text:?}: {message}");
                    assert!(!message.contains(" at line "), "{message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_handler_timeout_over_two_hours_is_refused_not_capped() {
        assert_eq!(
            parse(&format!(
                r#"{{"handlerTimeoutMs": {MAX_HANDLER_TIMEOUT_MS}}}"#
            ))
            .unwrap()
            .handler_timeout(),
            Duration::from_secs(2 * 60 * 60)
        );
        match parse(&format!(
            r#"{{"handlerTimeoutMs": {}}}"#,
            MAX_HANDLER_TIMEOUT_MS + 1
        )) {
            Err(ConfigError::Invalid { field, reason, .. }) => {
                assert_eq!(field, "handlerTimeoutMs");
                assert!(reason.contains("2 hours"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Built in code past the limit: the duration is capped all the same.
        let cfg = ContainerConfig {
            handler_timeout_ms: NonZeroU64::MAX,
            ..ContainerConfig::default()
        };
        assert_eq!(
            cfg.handler_timeout(),
            Duration::from_millis(MAX_HANDLER_TIMEOUT_MS)
        );
    }

    #[test]
    fn provider_key_is_lower_case_and_trimmed() {
        let mut cfg = ContainerConfig::default();
        assert_eq!(cfg.continuation_key(), "continuation:claude");
        cfg.provider = " OpenCode ".into();
        assert_eq!(cfg.provider_key(), "opencode");
        assert_eq!(cfg.continuation_key(), "continuation:opencode");
    }

    #[test]
    fn oversized_text_is_refused_before_parsing() {
        let text = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_CONFIG_BYTES as usize));
        match parse(&text) {
            Err(ConfigError::TooLarge { size, limit, .. }) => {
                assert_eq!(limit, MAX_CONFIG_BYTES);
                assert_eq!(size, text.len() as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_positive_limit_is_kept(n in 1u32..=u32::MAX) {
            let cfg = parse(&format!(r#"{{"maxMessagesPerPrompt": {n}}}"#)).unwrap();
            proptest::prop_assert_eq!(cfg.max_messages_per_prompt.get(), n);
        }
    }
}
