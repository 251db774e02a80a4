//! The memory budget of large answers (`GetSubjectHistory`, `AuditService/GetEntries`,
//! `TransparencyService/GetLeaves`, `AuditService/ListCheckpoints`): bytes of answers built and
//! not yet sent, per caller and in total.
//!
//! A service reserves an answer's bytes *while building it* ([`reserve`], then
//! [`Reservation::grow`] before each part is added), so that a caller past its budget gets
//! `RESOURCE_EXHAUSTED` instead of more memory; the finished answer carries its reservation as
//! an [`AnswerPermit`] in its extensions, and [`BudgetLayer`] moves that permit into the HTTP
//! response body, which hands the answer to HTTP/2 in chunks as the client's flow-control window
//! allows and releases the permit once the last chunk is handed on or the body is dropped. A caller is its
//! token's role and patient id (or its certificate's role), or, without either, its IP address.
//!
//! Small answers (checkpoints, proofs, receipts) are not counted: their size is bounded by the
//! concurrent streams of a connection.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;
use tonic::{
    Status,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    auth::{Caller, Role},
    error::BudgetScope,
    error::Error,
};

/// Bytes counted for one item of an answer beyond its own fields (tags, lengths, the item's
/// allocation).
pub const ITEM_OVERHEAD: usize = 64;

/// The answer budget shared by every call.
#[derive(Debug)]
pub struct AnswerBudget {
    per_caller: usize,
    total: usize,
    used: Mutex<Used>,
}

/// Bytes reserved for one answer being built, released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<AnswerBudget>,
    caller: CallerKey,
    bytes: usize,
}

/// A finished answer's reservation, carried in the response extensions until [`BudgetLayer`]
/// ties it to the response body.
#[derive(Debug, Clone)]
pub struct AnswerPermit {
    _held: Arc<Reservation>,
}

/// Tower layer that gives every call access to the budget (for [`reserve`]) and keeps an
/// answer's [`AnswerPermit`] until its body has been sent or dropped. It must sit inside the
/// authentication layer, which names the caller.
#[derive(Debug, Clone)]
pub struct BudgetLayer {
    budget: Arc<AnswerBudget>,
}

/// The service made by [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct BudgetService<S> {
    inner: S,
    budget: Arc<AnswerBudget>,
}

/// Starts a reservation of zero bytes for the caller of `request`.
///
/// # Errors
///
/// `INTERNAL` when the request did not pass through [`BudgetLayer`] (a wiring bug: fail closed).
pub fn reserve<T>(request: &tonic::Request<T>) -> Result<Reservation, Error> {
    let ticket = request.extensions().get::<Ticket>().ok_or(Error::Internal(
        "a large answer was built without the budget layer",
    ))?;
    Ok(Reservation {
        budget: ticket.budget.clone(),
        caller: ticket.caller.clone(),
        bytes: 0,
    })
}

/// Gives `request`, a call made outside the gRPC stack on behalf of `caller` (the FHIR
/// endpoint calls the consent service directly), the shared `budget`, as [`BudgetLayer`] does
/// for a gRPC call. The answer's reservation is released when the call's answer is dropped.
pub fn admit<T>(request: &mut tonic::Request<T>, budget: &Arc<AnswerBudget>, caller: &Caller) {
    request.extensions_mut().insert(Ticket {
        budget: budget.clone(),
        caller: CallerKey::Caller {
            role: caller.role,
            patient_id: caller.patient_id.clone(),
        },
    });
}

impl AnswerBudget {
    /// A budget of `per_caller` bytes for each caller and `total` bytes for all.
    pub fn new(per_caller: usize, total: usize) -> Self {
        Self {
            per_caller,
            total,
            used: Mutex::new(Used::default()),
        }
    }

    /// Bytes reserved now, in total (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.used.lock().map_or(0, |used| used.total)
    }

    fn take(&self, caller: &CallerKey, bytes: usize) -> Result<(), Error> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| Error::Internal("the answer budget lock is poisoned"))?;
        let mine = used.callers.get(caller).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.per_caller {
            return Err(Error::AnswerBudget {
                scope: BudgetScope::Caller,
                max: self.per_caller,
            });
        }
        if used.total.saturating_add(bytes) > self.total {
            return Err(Error::AnswerBudget {
                scope: BudgetScope::Server,
                max: self.total,
            });
        }
        used.total += bytes;
        used.callers.insert(caller.clone(), mine + bytes);
        Ok(())
    }

    fn give_back(&self, caller: &CallerKey, bytes: usize) {
        let Ok(mut used) = self.used.lock() else {
            return;
        };
        used.total = used.total.saturating_sub(bytes);
        if let Some(mine) = used.callers.get_mut(caller) {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                used.callers.remove(caller);
            }
        }
    }
}

impl Reservation {
    /// Reserves `bytes` more, before they are added to the answer.
    ///
    /// # Errors
    ///
    /// [`Error::AnswerBudget`] (`RESOURCE_EXHAUSTED`) when the caller's or the server's budget
    /// cannot cover them; what this reservation already holds is released when it is dropped.
    pub fn grow(&mut self, bytes: usize) -> Result<(), Error> {
        self.budget.take(&self.caller, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Attaches this reservation to `response`, to be released once its body is sent.
    pub fn attach<T>(self, mut response: tonic::Response<T>) -> tonic::Response<T> {
        response.extensions_mut().insert(AnswerPermit {
            _held: Arc::new(self),
        });
        response
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(&self.caller, self.bytes);
        }
    }
}

impl BudgetLayer {
    /// A layer over `budget`.
    pub fn new(budget: Arc<AnswerBudget>) -> Self {
        Self { budget }
    }
}

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            budget: self.budget.clone(),
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for BudgetService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let caller = caller_key(&request);
        request.extensions_mut().insert(Ticket {
            budget: self.budget.clone(),
            caller,
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let Some(permit) = response.extensions_mut().remove::<AnswerPermit>() else {
                return Ok(response);
            };
            Ok(response.map(|inner| {
                Body::new(PermitBody {
                    inner,
                    rest: Bytes::new(),
                    permit: Some(permit),
                })
            }))
        })
    }
}

/// Whom a call's answer bytes are counted against. Its `Debug` never prints a patient id.
#[derive(Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    /// An authenticated caller: role, and the patient id for a patient.
    Caller {
        role: Role,
        patient_id: Option<String>,
    },
    /// A caller without a token (public services), by IP address.
    Address(IpAddr),
    /// Neither: every such call shares one budget.
    Unknown,
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Caller { role, .. } => write!(f, "Caller({role})"),
            Self::Address(address) => write!(f, "Address({address})"),
            Self::Unknown => f.write_str("Unknown"),
        }
    }
}

/// What [`BudgetLayer`] puts into each request for [`reserve`].
#[derive(Debug, Clone)]
struct Ticket {
    budget: Arc<AnswerBudget>,
    caller: CallerKey,
}

#[derive(Debug, Default)]
struct Used {
    total: usize,
    callers: HashMap<CallerKey, usize>,
}

fn caller_key<B>(request: &http::Request<B>) -> CallerKey {
    let extensions = request.extensions();
    if let Some(Caller {
        role, patient_id, ..
    }) = extensions.get::<Caller>()
    {
        return CallerKey::Caller {
            role: *role,
            patient_id: patient_id.clone(),
        };
    }
    let address = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        });
    address.map_or(CallerKey::Unknown, |address| {
        CallerKey::Address(address.ip())
    })
}

/// Largest data frame an answer body hands on at a time. HTTP/2 asks for the next frame only
/// when the client's flow-control window has room, so an answer the client does not read stays
/// here, counted, rather than in the connection's send buffer, uncounted.
pub const SEND_CHUNK: usize = 16 * 1024;

/// A response body that holds its answer's permit until its last frame is handed on or it is
/// dropped, handing data on in chunks of at most [`SEND_CHUNK`] bytes.
struct PermitBody {
    inner: Body,
    /// Data taken from `inner` and not yet handed on.
    rest: Bytes,
    permit: Option<AnswerPermit>,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if !self.rest.is_empty() {
            let at = SEND_CHUNK.min(self.rest.len());
            let chunk = self.rest.split_to(at);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let polled = match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > SEND_CHUNK {
                        self.rest = data.split_off(SEND_CHUNK);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        };
        // The answer's bytes are gone once the trailers (the last frame) are handed on.
        let done = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Pending => false,
        };
        if done {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests;
