//! The bounded reads behind `sessionbus inspect`: every list is capped in SQL, every count is
//! `count(*)`, every text value is cut (or left out) in SQL before it reaches this process,
//! and the scan for undelivered rows stops after [`MAX_SCANNED_ROWS`] rows.

use super::{ClaimRow, InboundReport, MessageRow, OutboundReport, ToolRow, UndeliveredRow};
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl, SqliteConnection};
use sessionbus_schema::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many rows of each list the report shows (counts are complete, unless said otherwise).
pub const MAX_ROWS: usize = 20;

/// How many outbound rows above the host's delivery cursor are looked at, at most, to count
/// the undelivered ones.
pub const MAX_SCANNED_ROWS: usize = 5_000;

/// How many rows one window of that scan reads.
const WINDOW: usize = 200;

/// How many characters of a message's text the report shows.
pub const PREVIEW_CHARS: usize = 60;

/// The longest id, status or time text shown; longer ones are shown as `(N bytes)`.
const MAX_FIELD: usize = 256;

/// `col` as a blob when it is at most `n` bytes long, else NULL (without loading it).
fn bounded(col: &str, n: usize) -> String {
    format!("CASE WHEN octet_length({col}) <= {n} THEN CAST({col} AS BLOB) END")
}

/// The start of a message's text: the `text` field of JSON content, or the content itself,
/// cut in SQL.
fn preview_sql(col: &str) -> String {
    format!(
        "CAST(CASE WHEN json_valid({col}) THEN substr(json_extract({col}, '$.text'), 1, {n}) \
         ELSE substr({col}, 1, {n}) END AS BLOB)",
        n = PREVIEW_CHARS + 1
    )
}

fn text(b: Option<Vec<u8>>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn shown(b: Option<Vec<u8>>) -> String {
    text(b).unwrap_or_else(|| "(too long to show)".into())
}

fn preview(b: Option<Vec<u8>>) -> String {
    let t = text(b).unwrap_or_default();
    let mut out: String = t.chars().take(PREVIEW_CHARS).collect();
    if t.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

fn age(now: Timestamp, text: &str) -> Option<i64> {
    Timestamp::parse(text).ok().map(|t| now.millis_since(t))
}

fn marks(n: usize) -> String {
    vec!["?"; n].join(",")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(c: &mut SqliteConnection, sql: &str, now: Option<&str>) -> QueryResult<i64> {
    let q = diesel::sql_query(sql).into_boxed();
    let q = match now {
        Some(now) => q.bind::<Text, _>(now.to_string()),
        None => q,
    };
    Ok(q.get_result::<Count>(c)?.n)
}

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = Binary)]
    key: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows of `table` counted by `col` (at most [`MAX_ROWS`] groups, the largest first).
fn by_group(c: &mut SqliteConnection, table: &str, col: &str) -> QueryResult<Vec<(String, i64)>> {
    let sql = format!(
        "SELECT CAST(CASE WHEN {col} IS NULL THEN 'pending' WHEN octet_length({col}) <= 32 \
         THEN {col} ELSE '(too long)' END AS BLOB) AS key, count(*) AS n FROM {table} \
         GROUP BY 1 ORDER BY n DESC LIMIT {MAX_ROWS}"
    );
    Ok(diesel::sql_query(sql)
        .load::<Group>(c)?
        .into_iter()
        .map(|g| (String::from_utf8_lossy(&g.key).into_owned(), g.n))
        .collect())
}

#[derive(QueryableByName)]
struct InRow {
    #[diesel(sql_type = Nullable<Binary>)]
    id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    kind: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    timestamp: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    process_after: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tries: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    preview: Option<Vec<u8>>,
}

const PENDING: &str = "(status = 'pending' OR status IS NULL)";
const DUE: &str = "(process_after IS NULL OR julianday(process_after) IS NULL \
                   OR julianday(process_after) <= julianday(?))";
const LATER: &str = "julianday(process_after) > julianday(?)";

fn message_rows(
    c: &mut SqliteConnection,
    filter: &str,
    order: &str,
    now_iso: &str,
    now: Timestamp,
) -> QueryResult<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {id} AS id, seq, {kind} AS kind, {ts} AS timestamp, {pa} AS process_after, \
         tries, {pv} AS preview FROM messages_in WHERE {filter} ORDER BY {order} LIMIT {MAX_ROWS}",
        id = bounded("id", MAX_FIELD),
        kind = bounded("kind", MAX_FIELD),
        ts = bounded("timestamp", 64),
        pa = bounded("process_after", 64),
        pv = preview_sql("content"),
    );
    let rows: Vec<InRow> = diesel::sql_query(sql).bind::<Text, _>(now_iso).load(c)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let timestamp = text(r.timestamp);
            let process_after = text(r.process_after);
            let due_in_ms = process_after
                .as_deref()
                .and_then(|p| age(now, p))
                .map(i64::saturating_neg);
            MessageRow {
                id: shown(r.id),
                seq: r.seq,
                kind: shown(r.kind),
                tries: r.tries.unwrap_or(0),
                age_ms: timestamp.as_deref().and_then(|t| age(now, t)),
                process_after,
                due_in_ms,
                text: preview(r.preview),
            }
        })
        .collect())
}

/// What inbound.db holds, bounded.
pub(crate) fn read_inbound(c: &mut SqliteConnection, now: Timestamp) -> QueryResult<InboundReport> {
    let now_iso = now.to_iso();
    let mut by_status: BTreeMap<String, i64> = ["pending", "completed", "failed", "paused"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    // Host replies' mirrors (for the older implementation) are not messages: they are counted
    // as host replies.
    let messages = format!(
        "messages_in WHERE kind IS NOT '{}'",
        sessionbus_store::HOST_REPLY_KIND
    );
    for (status, n) in by_group(c, &messages, "status")? {
        *by_status.entry(status).or_default() += n;
    }
    let due_filter = format!("{PENDING} AND trigger != 0 AND kind != 'system' AND {DUE}");
    let later_filter = format!("{PENDING} AND {LATER}");
    let due_count = count(
        c,
        &format!("SELECT count(*) AS n FROM messages_in WHERE {due_filter}"),
        Some(&now_iso),
    )?;
    let scheduled_count = count(
        c,
        &format!("SELECT count(*) AS n FROM messages_in WHERE {later_filter}"),
        Some(&now_iso),
    )?;
    Ok(InboundReport {
        by_status,
        due: message_rows(c, &due_filter, "seq", &now_iso, now)?,
        due_count,
        scheduled: message_rows(
            c,
            &later_filter,
            "julianday(process_after), seq",
            &now_iso,
            now,
        )?,
        scheduled_count,
        host_replies: count(c, "SELECT count(*) AS n FROM host_replies", None)?,
        delivered: count(c, "SELECT count(*) AS n FROM delivered", None)?,
    })
}

#[derive(QueryableByName)]
struct ClaimSql {
    #[diesel(sql_type = Nullable<Binary>)]
    message_id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    status_changed: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct ToolSql {
    #[diesel(sql_type = Nullable<Binary>)]
    name: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    timeout: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    started_at: Option<Vec<u8>>,
}

/// What outbound.db holds, bounded (a connection from the untrusted layer).
pub(crate) fn read_outbound(
    c: &mut SqliteConnection,
    now: Timestamp,
) -> QueryResult<OutboundReport> {
    let messages_out = count(c, "SELECT count(*) AS n FROM messages_out", None)?;
    let acks: BTreeMap<String, i64> = by_group(c, "processing_ack", "status")?
        .into_iter()
        .collect();
    let claim_count = count(
        c,
        "SELECT count(*) AS n FROM processing_ack WHERE status = 'processing'",
        None,
    )?;
    let claims: Vec<ClaimSql> = diesel::sql_query(format!(
        "SELECT {} AS message_id, {} AS status_changed FROM processing_ack \
         WHERE status = 'processing' ORDER BY status_changed LIMIT {MAX_ROWS}",
        bounded("message_id", MAX_FIELD),
        bounded("status_changed", 64)
    ))
    .load(c)?;
    let claims = claims
        .into_iter()
        .map(|r| {
            let claimed_at = text(r.status_changed).unwrap_or_default();
            ClaimRow {
                age_ms: age(now, &claimed_at),
                message_id: shown(r.message_id),
                seq: None,
                status: None,
                claimed_at,
            }
        })
        .collect();
    let has_state = count(
        c,
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'container_state'",
        None,
    )? > 0;
    let tool = if has_state {
        diesel::sql_query(format!(
            "SELECT {} AS name, tool_declared_timeout_ms AS timeout, {} AS started_at \
             FROM container_state WHERE id = 1 LIMIT 1",
            bounded("current_tool", MAX_FIELD),
            bounded("tool_started_at", 64)
        ))
        .load::<ToolSql>(c)?
        .into_iter()
        .next()
        .and_then(|r| {
            let started_at = text(r.started_at);
            r.name.map(|name| ToolRow {
                name: String::from_utf8_lossy(&name).into_owned(),
                declared_timeout_ms: r.timeout,
                running_ms: started_at.as_deref().and_then(|s| age(now, s)),
                started_at,
            })
        })
    } else {
        None
    };
    Ok(OutboundReport {
        messages_out,
        acks,
        claims,
        claim_count: usize::try_from(claim_count).unwrap_or(0),
        tool,
    })
}

#[derive(QueryableByName)]
struct IdStatus {
    #[diesel(sql_type = Binary)]
    id: Vec<u8>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    status: Option<Vec<u8>>,
}

/// Seq and status in inbound.db of each of `ids` (at most [`MAX_ROWS`] of them).
pub(crate) fn statuses_of(
    c: &mut SqliteConnection,
    ids: &[String],
) -> QueryResult<HashMap<String, (Option<i64>, String)>> {
    let ids = ids.get(..ids.len().min(MAX_ROWS)).unwrap_or_default();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT CAST(id AS BLOB) AS id, seq, {} AS status FROM messages_in WHERE id IN ({})",
        bounded("status", 32),
        marks(ids.len())
    );
    let mut q = diesel::sql_query(sql).into_boxed();
    for id in ids {
        q = q.bind::<Text, _>(id.clone());
    }
    Ok(q.load::<IdStatus>(c)?
        .into_iter()
        .map(|r| {
            let status = text(r.status).unwrap_or_else(|| "pending".into());
            (String::from_utf8_lossy(&r.id).into_owned(), (r.seq, status))
        })
        .collect())
}

#[derive(QueryableByName)]
struct OutSql {
    #[diesel(sql_type = Nullable<Binary>)]
    id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    in_reply_to: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    timestamp: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    deliver_after: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    preview: Option<Vec<u8>>,
}

fn out_columns(deliver_after: &str) -> String {
    format!(
        "{} AS id, seq, {} AS in_reply_to, {} AS timestamp, {deliver_after} AS deliver_after, \
         {} AS preview",
        bounded("id", MAX_FIELD),
        bounded("in_reply_to", MAX_FIELD),
        bounded("timestamp", 64),
        preview_sql("content")
    )
}

fn undelivered_row(source: &'static str, r: OutSql, now: Timestamp) -> UndeliveredRow {
    let timestamp = text(r.timestamp);
    UndeliveredRow {
        source,
        id: shown(r.id),
        seq: r.seq,
        in_reply_to: text(r.in_reply_to),
        age_ms: timestamp.as_deref().and_then(|t| age(now, t)),
        deliver_after: text(r.deliver_after),
        attempts: 0,
        last_error: None,
        text: preview(r.preview),
    }
}

/// Which of `ids` inbound.db records as delivered.
fn delivered_among(inbound: &mut SqliteConnection, ids: &[String]) -> QueryResult<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Binary)]
        id: Vec<u8>,
    }
    let mut out = HashSet::new();
    for chunk in ids.chunks(WINDOW) {
        let sql = format!(
            "SELECT CAST(message_out_id AS BLOB) AS id FROM delivered \
             WHERE message_out_id IN ({})",
            marks(chunk.len())
        );
        let mut q = diesel::sql_query(sql).into_boxed();
        for id in chunk {
            q = q.bind::<Text, _>(id.clone());
        }
        out.extend(
            q.load::<Id>(inbound)?
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.id).into_owned()),
        );
    }
    Ok(out)
}

/// Outbound rows not yet delivered: the first [`MAX_ROWS`] by seq, how many there are, and
/// whether that count is complete (the scan above the cursor stopped at
/// [`MAX_SCANNED_ROWS`]).
pub(crate) fn read_undelivered(
    inbound: &mut SqliteConnection,
    outbound: &mut SqliteConnection,
    now: Timestamp,
) -> QueryResult<(Vec<UndeliveredRow>, usize, bool)> {
    let cursor = |c: &mut SqliteConnection, name: &str| -> QueryResult<i64> {
        #[derive(QueryableByName)]
        struct Seq {
            #[diesel(sql_type = BigInt)]
            seq: i64,
        }
        Ok(
            diesel::sql_query("SELECT seq FROM host_cursor WHERE name = ? LIMIT 1")
                .bind::<Text, _>(name)
                .load::<Seq>(c)?
                .first()
                .map_or(0, |s| s.seq),
        )
    };
    let mut rows = Vec::new();
    let mut total = 0usize;
    let mut complete = true;

    // The container's rows above the delivery cursor, window by window.
    let mut after = cursor(inbound, "messages_out")?;
    let mut scanned = 0usize;
    loop {
        if scanned >= MAX_SCANNED_ROWS {
            complete = false;
            break;
        }
        let window: Vec<OutSql> = diesel::sql_query(format!(
            "SELECT {} FROM messages_out WHERE seq > ? ORDER BY seq LIMIT {WINDOW}",
            out_columns(&bounded("deliver_after", 64))
        ))
        .bind::<BigInt, _>(after)
        .load(outbound)?;
        let n = window.len();
        scanned += n;
        let Some(last) = window.last().and_then(|r| r.seq) else {
            break;
        };
        after = last;
        let ids: Vec<String> = window.iter().filter_map(|r| text(r.id.clone())).collect();
        let settled = delivered_among(inbound, &ids)?;
        for r in window {
            if text(r.id.clone()).is_some_and(|id| settled.contains(&id)) {
                continue;
            }
            total += 1;
            if rows.len() < MAX_ROWS {
                rows.push(undelivered_row("container", r, now));
            }
        }
        if n < WINDOW {
            break;
        }
    }

    // Rows the cursor passed while they were not due yet (held), and the host's own replies.
    const NOT_DELIVERED: &str =
        "NOT EXISTS (SELECT 1 FROM delivered d WHERE d.message_out_id = h.message_out_id)";
    let held_count = count(
        inbound,
        &format!(
            "SELECT count(*) AS n FROM held_outbound h WHERE h.source = 'container' \
             AND {NOT_DELIVERED}"
        ),
        None,
    )?;
    total += usize::try_from(held_count).unwrap_or(0);
    if held_count > 0 {
        #[derive(QueryableByName)]
        struct Held {
            #[diesel(sql_type = BigInt)]
            seq: i64,
        }
        let seqs: Vec<i64> = diesel::sql_query(format!(
            "SELECT h.seq AS seq FROM held_outbound h WHERE h.source = 'container' \
             AND {NOT_DELIVERED} ORDER BY h.seq LIMIT {MAX_ROWS}"
        ))
        .load::<Held>(inbound)?
        .into_iter()
        .map(|h| h.seq)
        .collect();
        let sql = format!(
            "SELECT {} FROM messages_out WHERE seq IN ({}) ORDER BY seq LIMIT {MAX_ROWS}",
            out_columns(&bounded("deliver_after", 64)),
            marks(seqs.len())
        );
        let mut q = diesel::sql_query(sql).into_boxed();
        for s in &seqs {
            q = q.bind::<BigInt, _>(*s);
        }
        for r in q.load::<OutSql>(outbound)? {
            rows.push(undelivered_row("container", r, now));
        }
    }
    let host_filter = "NOT EXISTS (SELECT 1 FROM delivered d WHERE d.message_out_id = h.id)";
    total += usize::try_from(count(
        inbound,
        &format!("SELECT count(*) AS n FROM host_replies h WHERE {host_filter}"),
        None,
    )?)
    .unwrap_or(0);
    let host: Vec<OutSql> = diesel::sql_query(format!(
        "SELECT {} FROM host_replies h WHERE {host_filter} ORDER BY seq LIMIT {MAX_ROWS}",
        out_columns("NULL")
    ))
    .load(inbound)?;
    rows.extend(host.into_iter().map(|r| undelivered_row("host", r, now)));

    rows.sort_by_key(|r| r.seq);
    rows.truncate(MAX_ROWS);
    attach_attempts(inbound, &mut rows)?;
    Ok((rows, total, complete))
}

#[derive(QueryableByName)]
struct Attempt {
    #[diesel(sql_type = Binary)]
    id: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    last_error: Option<Vec<u8>>,
}

/// Delivery attempts of the rows shown.
fn attach_attempts(inbound: &mut SqliteConnection, rows: &mut [UndeliveredRow]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT CAST(message_out_id AS BLOB) AS id, attempts, {} AS last_error \
         FROM delivery_attempts WHERE message_out_id IN ({})",
        bounded("last_error", 1024),
        marks(rows.len())
    );
    let mut q = diesel::sql_query(sql).into_boxed();
    for r in rows.iter() {
        q = q.bind::<Text, _>(r.id.clone());
    }
    let found: HashMap<String, (i64, Option<String>)> = q
        .load::<Attempt>(inbound)?
        .into_iter()
        .map(|a| {
            (
                String::from_utf8_lossy(&a.id).into_owned(),
                (a.attempts, text(a.last_error)),
            )
        })
        .collect();
    for r in rows.iter_mut() {
        if let Some((n, e)) = found.get(&r.id) {
            r.attempts = *n;
            r.last_error = e.clone();
        }
    }
    Ok(())
}
