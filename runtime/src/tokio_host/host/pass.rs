//! What one task of the async host does: a session's pass (the sweep, then the delivery) or a
//! container stop, and the async delivery of one session.

use super::{ContainerStop, Ctx, SessionPass, Slot};
use crate::error::{panic_detail, RuntimeError};
use crate::host::{begin_attempt, finish_attempt, Begun, DeliveryReport, Sweeper, DELIVERY_BATCH};
use crate::liveness::KillReason;
use crate::tokio_host::traits::{AsyncContainerControl, AsyncDeliverer, BlockOn};
use crate::tokio_host::{blocking, CatchUnwind};
use sessionbus_store::{HostSession, SessionPaths};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// What a task of the loop ended with.
pub(super) enum Done {
    Pass(SessionPass),
    Stop(ContainerStop),
}

/// One session's pass: the sweep on a blocking thread (the async control bridged into it),
/// then the delivery, each part's panics caught.
pub(super) async fn serve<C: AsyncContainerControl, D: AsyncDeliverer>(
    ctx: Arc<Ctx<C, D>>,
    slot: Slot,
    pass: u64,
) -> Done {
    // Never closed, so never an error; without a permit the session would still be served.
    let _permit = Arc::clone(&ctx.permits).acquire_owned().await.ok();
    let dir = slot.host.paths().dir.clone();
    let sweep = {
        let ctx = Arc::clone(&ctx);
        let host = slot.host.clone();
        let sweeper = Arc::clone(&slot.sweeper);
        let handle = Handle::current();
        blocking(&dir, move || {
            let mut control = BlockOn {
                control: &ctx.control,
                handle,
                timeout: ctx.opts.control_timeout,
            };
            let mut sweeper = match sweeper.lock() {
                Ok(s) => s,
                // A panic inside an earlier sweep: start again from nothing known (every
                // session gets a full sweep).
                Err(poisoned) => {
                    let mut s = poisoned.into_inner();
                    *s = Sweeper::new(ctx.opts.sweep);
                    sweeper.clear_poison();
                    s
                }
            };
            // The hook is the host's (set by its builder after sessions may have been added).
            sweeper.set_next_occurrence(Arc::clone(&ctx.next_occurrence));
            sweeper.sweep(&host, &mut control)
        })
        .await
    };
    let delivery = CatchUnwind::new(crate::tokio_host::deliver_session(
        &slot.host,
        &ctx.deliverer,
        ctx.opts.max_delivery_attempts,
        ctx.opts.delivery_timeout,
    ))
    .await
    .unwrap_or_else(|payload| {
        Err(RuntimeError::Panicked {
            session: dir.clone(),
            detail: panic_detail(payload.as_ref()),
        })
    });
    Done::Pass(SessionPass {
        session: dir,
        pass,
        sweep,
        delivery,
    })
}

/// Stops a session's container through the control, if one runs.
pub(super) async fn stop_container<C: AsyncContainerControl, D: AsyncDeliverer>(
    ctx: Arc<Ctx<C, D>>,
    permits: Arc<Semaphore>,
    paths: SessionPaths,
    reason: KillReason,
) -> Done {
    let _permit = permits.acquire_owned().await.ok();
    let timeout = ctx.opts.control_timeout;
    let session = paths.dir.clone();
    let control_error = |source| RuntimeError::Control {
        session: session.clone(),
        action: "kill",
        source,
    };
    let result = CatchUnwind::new(async {
        let running = tokio::time::timeout(timeout, ctx.control.is_running(&paths))
            .await
            .unwrap_or(true);
        if !running {
            return Ok(false);
        }
        match tokio::time::timeout(timeout, ctx.control.kill(&paths, &reason)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(source)) => Err(control_error(source)),
            Err(_) => Err(control_error(
                format!("kill timed out after {timeout:?}").into(),
            )),
        }
    })
    .await
    .unwrap_or_else(|payload| {
        Err(RuntimeError::Panicked {
            session: session.clone(),
            detail: panic_detail(payload.as_ref()),
        })
    });
    Done::Stop(ContainerStop { session, result })
}

/// The delivery of one session, from async code (see [`crate::tokio_host::deliver_session`]).
pub(crate) async fn deliver<D: AsyncDeliverer>(
    host: &HostSession,
    deliverer: &D,
    max_attempts: i64,
    timeout: Duration,
) -> Result<DeliveryReport, RuntimeError> {
    let dir = host.paths().dir.clone();
    let h = host.clone();
    let rows = blocking(&dir, move || Ok(h.due_outbound(DELIVERY_BATCH)?)).await?;
    let mut report = DeliveryReport::default();
    for row in rows {
        let (h, r) = (host.clone(), row.clone());
        let attempt = match blocking(&dir, move || begin_attempt(&h, &r, max_attempts)).await? {
            Begun::GaveUp => {
                report.failed.push(row.message.id);
                continue;
            }
            Begun::Attempt(attempt) => attempt,
        };
        let handed =
            match tokio::time::timeout(timeout, deliverer.deliver(host.paths(), &row, attempt))
                .await
            {
                Ok(handed) => handed,
                Err(_) => Err(format!("the hand-off timed out after {timeout:?}").into()),
            };
        let (h, id) = (host.clone(), row.message.id.clone());
        let finished = blocking(&dir, move || {
            finish_attempt(&h, &id, attempt, handed, max_attempts)
        })
        .await?;
        report.note(row, finished);
    }
    Ok(report)
}
