//! `sessionbus migrate`'s text: one line per entry, the summary, and the progress printer.

use super::report::{Change, FileReport, FileResult, MigrateReport, SkipReason};
use super::Progress;
use crate::operator::scan::SESSIONS_DIR;
use crate::operator::{print_stderr, print_stdout};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// With at least this many session folders (and stderr a terminal) a progress bar is drawn
/// on stderr.
pub const PROGRESS_BAR_MIN_SESSIONS: usize = 10;

/// One line of text for an entry: status word, path, and what was done.
pub fn render_entry(entry: &FileReport, dry_run: bool) -> String {
    let path = entry.path.display();
    match &entry.result {
        FileResult::Migrated(change) => {
            let status = if dry_run { "would migrate" } else { "migrated" };
            format!("{status:<13} {path}: {}", render_change(change, dry_run))
        }
        FileResult::Current => format!("{:<13} {path}", "current"),
        FileResult::Converted(c) => {
            let status = if dry_run {
                "would convert"
            } else {
                "converted"
            };
            let verb = if dry_run { "would move" } else { "moved" };
            let mut names = c.moved.join(", ");
            if c.moved_count > c.moved.len() {
                names.push_str(&format!(", and {} more", c.moved_count - c.moved.len()));
            }
            let owner = c
                .container_owner
                .map_or_else(|| "this user".to_string(), |(u, g)| format!("{u}:{g}"));
            format!(
                "{status:<13} {path}: single layout to split ({verb} {} into container/, owned \
                 by {owner}: {names}); container stopped: {}",
                c.moved_count, c.liveness
            )
        }
        FileResult::LeftToContainer(f) => {
            let schema = match &f.schema {
                Some(s) if s.state == "legacy" => format!(
                    "legacy {} schema",
                    s.legacy_generation.as_deref().unwrap_or("?")
                ),
                Some(s) => format!("{} schema", s.state),
                None => "schema not read".to_string(),
            };
            let mut line = format!(
                "{:<13} {path}: {schema}; never written here, its container migrates it when \
                 it starts",
                "container's"
            );
            for p in &f.problems {
                line.push_str(&format!("; {p}"));
            }
            line
        }
        FileResult::Skipped { reason, .. } => format!("{:<13} {path}: {reason}", "skipped"),
        FileResult::Failed { reason, .. } => format!("{:<13} {path}: {reason}", "FAILED"),
    }
}

fn render_change(c: &Change, dry_run: bool) -> String {
    let mut parts = Vec::new();
    if let Some(g) = c.legacy_generation {
        let mut s = if dry_run {
            format!("legacy {g} file to adopt")
        } else {
            format!("adopted legacy {g} file")
        };
        if !c.added.is_empty() {
            let verb = if dry_run { "adding" } else { "added" };
            s.push_str(&format!(" ({verb} {})", c.added.join(", ")));
        }
        parts.push(s);
    }
    if c.was_empty {
        parts.push(if dry_run {
            "empty file to initialise".to_string()
        } else {
            "initialised empty file".to_string()
        });
    }
    if !c.applied.is_empty() {
        let n = c.applied.len();
        let noun = if n == 1 { "migration" } else { "migrations" };
        let verb = if dry_run { "to apply" } else { "applied" };
        parts.push(format!("{n} {noun} {verb} ({})", c.applied.join(", ")));
    }
    if let Some(mode) = &c.switched_from {
        let verb = if dry_run { "would switch" } else { "switched" };
        parts.push(format!(
            "{verb} from {} to DELETE journal mode",
            mode.to_uppercase()
        ));
    }
    parts.join("; ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text printed after the entry lines: counts, each failure, and whether anything
/// changed.
pub fn render_summary(report: &MigrateReport) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let would = if report.dry_run { "would be " } else { "" };
    if report.files.is_empty() {
        match &report.data_dir {
            Some(dir) => out.push_str(&format!(
                "No session folders under {}.\n",
                dir.join(SESSIONS_DIR).display()
            )),
            None => out.push_str("No session folders.\n"),
        }
    }
    out.push_str(&format!(
        "Summary ({} in {}): {} {would}converted, {} {would}migrated, {} already current, {} \
         left to their containers, {} skipped, {} failed\n",
        plural(s.total(), "entry", "entries"),
        plural(report.sessions, "session folder", "session folders"),
        s.converted,
        s.migrated,
        s.already_current,
        s.left_to_container,
        s.skipped,
        s.failed
    ));
    if !s.failures.is_empty() {
        out.push_str("Failed:\n");
        for f in &s.failures {
            out.push_str(&format!("  {}: {}\n", f.path.display(), f.reason));
        }
    }
    if report.dry_run {
        out.push_str("Dry run: nothing was written or converted.\n");
    } else if s.migrated == 0 && s.converted == 0 {
        if s.total() > 0 && s.already_current + s.left_to_container == s.total() {
            out.push_str("Nothing changed: every inbound.db is already current.\n");
        } else {
            out.push_str("Nothing changed.\n");
        }
    }
    out
}

/// Prints progress while [`super::run`] works: the entry lines (text mode), warnings (JSON
/// mode), and a progress bar on stderr when it is a terminal and there are many sessions.
pub(crate) struct Printer {
    pub json: bool,
    pub dry_run: bool,
    pub stderr_is_terminal: bool,
    pub bar: Option<ProgressBar>,
}

impl Printer {
    pub(crate) fn on_progress(&mut self, p: Progress<'_>) {
        match p {
            Progress::Found { sessions, .. } => {
                if self.stderr_is_terminal && sessions >= PROGRESS_BAR_MIN_SESSIONS {
                    let bar = ProgressBar::with_draw_target(
                        Some(u64::try_from(sessions).unwrap_or(u64::MAX)),
                        ProgressDrawTarget::stderr(),
                    );
                    if let Ok(style) =
                        ProgressStyle::with_template("{bar:40} {pos}/{len} sessions {wide_msg}")
                    {
                        bar.set_style(style);
                    }
                    self.bar = Some(bar);
                }
            }
            Progress::Start { path, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(path.display().to_string());
                }
            }
            Progress::Done { entries, .. } => {
                for file in entries {
                    self.entry(file);
                }
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
        }
    }

    fn entry(&self, file: &FileReport) {
        if self.json {
            // stdout is the JSON report: tell the operator about problems on stderr.
            let worth_a_warning = match &file.result {
                FileResult::Skipped { cause, .. } => *cause != SkipReason::Missing,
                FileResult::Failed { .. } => true,
                FileResult::LeftToContainer(f) => !f.problems.is_empty(),
                FileResult::Migrated(_) | FileResult::Current | FileResult::Converted(_) => false,
            };
            if worth_a_warning {
                let line = format!("warning: {}", render_entry(file, self.dry_run));
                match &self.bar {
                    Some(bar) => bar.suspend(|| print_stderr(&line)),
                    None => print_stderr(&line),
                }
            }
        } else {
            let line = render_entry(file, self.dry_run);
            // A closed stdout is reported once, when the summary cannot be written.
            let _ = match &self.bar {
                Some(bar) => bar.suspend(|| print_stdout(&line)),
                None => print_stdout(&line),
            };
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
