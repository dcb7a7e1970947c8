//! The soak's processes, run as hidden `xtask soak-proc <role>` subcommands of this same
//! binary so the driver can `kill -9` and restart each while it keeps the ledger:
//!
//! - `host`: sweeps and delivers every session (`for_each_session`, `sweep_session`,
//!   `deliver_session`), writes a random workload through the command gate, and starts and
//!   kills the containers through
//!   [`ContainerControl`](sessionbus_runtime::host::ContainerControl). At start-up it kills the
//!   containers a killed predecessor left running (a real host stops orphaned containers the
//!   same way);
//! - `container`: the runtime's [`Container`](sessionbus_runtime::container::Container) poll
//!   loop with an echo handler (the `echo_container` example's, with a random think time), on
//!   the run's shared clock. It misbehaves on purpose on the driver's special messages (see
//!   [`Special`]): it panics once on `panic-once:<id>`, hangs once on `hang-once:<id>`, and
//!   fails every time on `poison:<id>`;
//! - `writer`: a host CLI process writing into one session's inbound.db next to the host
//!   (host-side writers serialise through SQLite's lock); with `--fsize-extra` it runs under
//!   a file-size limit just above inbound.db's size and reports the error it gets.
//!
//! Everything a process learns goes to append-only files in the run folder (one `write` per
//! line, so a kill never leaves half a line): the ledgers (`ledger/written-*.log` after each
//! committed write, `ledger/platform-*.log` for each hand-off to the "chat platform") and the

mod container;
mod host;
mod writer;

use super::clock::real_ms;
use super::os;
use clap::{Args, Subcommand};
use container::container;
use host::host;
use sessionbus_runtime::error::RuntimeError;
use sessionbus_store::{Address, DbError, MessageIn, SessionPaths, StoreError};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use writer::writer;

pub use host::kill_kind;

/// Set by SIGTERM / SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit status of a process that got a "disk full or file too large" error.
pub const EXIT_DISK_FULL: u8 = 3;
/// Exit status of a process that got an I/O error from the file system.
pub const EXIT_IO: u8 = 4;
/// Exit status of a process whose session file is not a usable database (garbage, truncated).
pub const EXIT_BAD_FILE: u8 = 5;
/// Exit status of any other failure.
pub const EXIT_OTHER: u8 = 1;
/// Exit status of a container whose handler panicked, failed (with an error that is not a
/// file error) or ran past its deadline: the soak's special messages do this on purpose.
pub const EXIT_HANDLER: u8 = 6;

/// A special message the driver writes (text `<kind>:<id>`, see [`Special::name`]) and
/// the soak's container misbehaves on, as a real agent's handler can:
///
/// - `panic-once:<id>`: the handler panics on the first batch holding it. The runtime leaves
///   the batch's claims and ends the run; the host counts a try and retries at once, and the
///   next container answers it. It must end answered exactly once.
/// - `hang-once:<id>`: the handler never returns from the first batch holding it (it ignores
///   stop signals too). Past `handlerTimeoutMs` (real time: the container measures its deadline
///   with `Instant`, so clock jumps never fire it) the container sets `.heartbeat` back to the
///   claim time; the driver then moves the clock past the 60 s claim tolerance and the host's
///   sweep must kill the container. A later container answers the message, exactly once.
/// - `poison:<id>`: the handler fails on every batch holding it, panicking or returning an
///   error by turns. Each failure costs the container its run and the message a try; after
///   the retry policy's last try the host marks it `failed`. It must end `failed`, never
///   answered, while every other message is answered.
///
/// "Once" is a marker in the container's own session state (`soak-once:<id>` in
/// `session_state`, [`once_key`]), written (and committed) before the handler misbehaves: a
/// later container finds it and answers. A kill between the marker and the misbehaviour only
/// means the fault did not happen for that message; the container's events (`c-<sid>.log`:
/// `handler_panic`, `handler_hang`, `handler_poison`) say what did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Special {
    /// `panic-once:<id>`.
    PanicOnce,
    /// `hang-once:<id>`.
    HangOnce,
    /// `poison:<id>`.
    Poison,
}

impl Special {
    /// Every kind.
    pub const ALL: [Special; 3] = [Special::PanicOnce, Special::HangOnce, Special::Poison];

    /// Its name: the text's prefix without the colon, and the kind in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Special::PanicOnce => "panic-once",
            Special::HangOnce => "hang-once",
            Special::Poison => "poison",
        }
    }

    /// The text of the special message `id` of this kind.
    pub fn text(self, id: &str) -> String {
        format!("{}:{id}", self.name())
    }

    /// The kind of a message text, if it is a special message's.
    pub fn of_text(text: &str) -> Option<Special> {
        let (prefix, _) = text.split_once(':')?;
        Special::ALL.into_iter().find(|s| s.name() == prefix)
    }
}

/// The session-state key of the marker that says the container already misbehaved on message
/// `id` (see [`Special`]).
pub fn once_key(id: &str) -> String {
    format!("soak-once:{id}")
}

/// The text of a chat message's content (empty when it has none).
pub fn text_of(m: &MessageIn) -> String {
    m.content_json()
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string()
}

/// `xtask soak-proc`: one process of a soak run (started by `cargo xtask soak`, not by hand).
#[derive(Debug, Clone, Args)]
pub struct ProcArgs {
    /// The role.
    #[command(subcommand)]
    pub role: Role,
}

/// The roles.
#[derive(Debug, Clone, Subcommand)]
pub enum Role {
    /// The host: sweeps, delivers, writes, starts and kills containers.
    Host {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// This host's incarnation (1 for the first, +1 per restart).
        #[arg(long)]
        incarnation: u32,
    },
    /// One session's container.
    Container {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// The session folder.
        #[arg(long)]
        workspace: PathBuf,
    },
    /// A host CLI writer into one session's inbound.db.
    Writer {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// The session index.
        #[arg(long)]
        session: usize,
        /// This writer's incarnation.
        #[arg(long)]
        incarnation: u32,
        /// Run under a file-size limit of inbound.db's size plus this many bytes, write as
        /// fast as possible until a write fails, and exit with the kind of error as status.
        #[arg(long)]
        fsize_extra: Option<u64>,
    },
}

/// Runs one soak process.
pub fn main(args: &ProcArgs) -> ExitCode {
    os::on_stop_signal(&STOP);
    let result = match &args.role {
        Role::Host { run, incarnation } => host(run, *incarnation),
        Role::Container { run, workspace } => container(run, workspace),
        Role::Writer {
            run,
            session,
            incarnation,
            fsize_extra,
        } => writer(run, *session, *incarnation, *fsize_extra),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("soak-proc: {msg}");
            ExitCode::from(code)
        }
    }
}

type ProcResult = Result<(), (u8, String)>;

fn other(msg: impl std::fmt::Display) -> (u8, String) {
    (EXIT_OTHER, msg.to_string())
}

/// An append-only log: each line is one `write(2)` on an `O_APPEND` file, so concurrent
/// writers and kills never interleave or cut lines.
pub struct AppendLog {
    file: Option<File>,
}

impl AppendLog {
    /// Opens (creating) `path` for appending; a log that cannot be opened drops its lines.
    pub fn open(path: &Path) -> Self {
        let file = File::options().create(true).append(true).open(path).ok();
        AppendLog { file }
    }

    /// Appends one line of tab-separated fields, prefixed with the real time in ms.
    pub fn line(&self, fields: &[&str]) {
        if let Some(mut f) = self.file.as_ref() {
            let mut s = real_ms().to_string();
            for x in fields {
                s.push('\t');
                s.push_str(&x.replace(['\t', '\n'], " "));
            }
            s.push('\n');
            // Errors (a full disk under a file-size limit) only lose this line.
            let _ = f.write_all(s.as_bytes());
        }
    }
}

/// The short name of an error, for events and exit statuses: the `DbError` variant for file
/// errors, else the error type.
pub fn error_kind(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Store(s) => store_error_kind(s),
        RuntimeError::Config(_) => "Config",
        RuntimeError::Heartbeat(_) => "Heartbeat",
        RuntimeError::Panicked { .. } => "Panicked",
        RuntimeError::Control { .. } => "Control",
        // A handler's error that is a file error (a full disk under a file-size limit, say)
        // is that error; anything else the handler did is the handler's.
        RuntimeError::HandlerFailed { source, .. } => match source.as_ref() {
            RuntimeError::Store(s) => store_error_kind(s),
            _ => "Handler",
        },
        RuntimeError::HandlerPanicked { .. } | RuntimeError::HandlerTimedOut { .. } => "Handler",
        _ => "Runtime",
    }
}

/// See [`error_kind`].
pub fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Db(d) => match d {
            DbError::NotFound { .. } => "NotFound",
            DbError::UnsafePath { .. } => "UnsafePath",
            DbError::NotADatabase { .. } => "NotADatabase",
            DbError::Corrupt { .. } => "Corrupt",
            DbError::ReadOnly { .. } => "ReadOnly",
            DbError::Locked { .. } => "Locked",
            DbError::HotJournal { .. } => "HotJournal",
            DbError::WalMode { .. } => "WalMode",
            DbError::DiskFull { .. } => "DiskFull",
            DbError::NewerThanCode { .. } => "NewerThanCode",
            DbError::NotMigrated { .. } => "NotMigrated",
            DbError::TooOld { .. } => "TooOld",
            DbError::WrongFile { .. } => "WrongFile",
            DbError::UnrecognisedShape { .. } => "UnrecognisedShape",
            DbError::Migration { .. } => "Migration",
            DbError::Io { .. } => "Io",
            DbError::Open { .. } => "Open",
            DbError::Query { .. } => "Query",
            _ => "Db",
        },
        StoreError::InvalidContent { .. } => "InvalidContent",
        StoreError::ContentTooLarge { .. } => "ContentTooLarge",
        StoreError::InvalidId { .. } => "InvalidId",
        StoreError::DuplicateId { .. } => "DuplicateId",
        StoreError::NotWritable { .. } => "NotWritable",
        StoreError::InvalidArgument { .. } => "InvalidArgument",
        _ => "Store",
    }
}

/// The exit status for an error kind.
pub fn exit_code_for(kind: &str) -> u8 {
    match kind {
        "DiskFull" => EXIT_DISK_FULL,
        "Io" => EXIT_IO,
        "NotADatabase" | "Corrupt" | "WrongFile" | "NotMigrated" | "UnrecognisedShape"
        | "TooOld" => EXIT_BAD_FILE,
        "Handler" => EXIT_HANDLER,
        _ => EXIT_OTHER,
    }
}

fn sid_of(paths: &SessionPaths) -> String {
    paths
        .dir
        .file_name()
        .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned())
}

/// The chat address of session `sid`'s messages.
pub fn address(sid: &str) -> Address {
    Address {
        platform_id: Some("soak".into()),
        channel_type: Some("soak".into()),
        thread_id: Some(sid.to_string()),
    }
}
