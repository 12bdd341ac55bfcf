//! The audit trail: the record of one token request, assembled in [`super::handle`] from what
//! each step returned (the admitted caller, the ask, the authorization, the issued token, the
//! "not mine" reason or the refusal). The record of an answer that carries a token is written
//! before the answer is sent ([`Trail::write_before_sending`]); every other record once the
//! response is sent ([`Trail::write_when_sent`]).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use super::admit::Admitted;
use super::ask::{Ask, Target};
use super::authorize::{Authorized, NotMine};
use super::mint::Issued;
use super::refusal::Refusal;
use crate::audit::{
    self, AuditLog, Delivery, JwtInfo, OnFailure, PipelineInfo, Record, Vended, WriteError,
};
use crate::http::{Request, Response, Sent};
use crate::time;

/// See the module documentation.
#[derive(Debug)]
pub struct Trail {
    record: Record,
    /// The TCP peer (canonical), whose text `record.peer_ip` holds.
    peer: std::net::IpAddr,
}

impl Trail {
    /// A trail for a request, before anything about it is known.
    pub fn new(req: &Request) -> Trail {
        // An IPv4 client of a dual-stack listener as itself, not `::ffff:a.b.c.d`.
        let peer = req.peer.ip().to_canonical();
        Trail {
            record: Record::new(
                &req.request_id,
                req.method.as_str(),
                &req.path,
                peer.to_string(),
                req.header("user-agent"),
            ),
            peer,
        }
    }

    /// The client's address, derived from the peer and a trusted proxy's forwarding headers
    /// (the record's `sourceIp`; `peerIp` stays the TCP peer).
    pub fn source(&mut self, client: std::net::IpAddr) {
        // Most often the peer itself, already written by `new`.
        if client != self.peer {
            self.record.source_ip = client.to_string();
        }
    }

    /// The caller passed verification.
    pub fn admitted(&mut self, admitted: &Admitted, now: u64) {
        let verified = &admitted.verified;
        self.record.jwt = Some(JwtInfo {
            kid: Some(verified.kid.clone()),
            claims: Some(Arc::clone(&verified.claims)),
            now,
        });
        self.record.pipeline = Some(PipelineInfo(Arc::clone(&verified.claims)));
    }

    /// The profile about to be authorized, from the generation with `digest`.
    pub fn asked(&mut self, ask: &Ask, digest: &str) {
        self.record.profile = Some(ask.profile.to_string());
        self.record.profile_digest = Some(digest.to_owned());
    }

    /// The caller's claims met the profile's rules.
    pub fn authorized(&mut self, authorized: &Authorized<'_>) {
        // A matching value is at most 256 bytes (longer ones never match), as the audit wants.
        self.record.matches = authorized.matches.clone();
    }

    /// The repository the caller named, if any.
    pub fn requested(&mut self, target: &Target) {
        self.record.requested_repository = match target {
            Target::Own => None,
            Target::Scoped(name) => Some(audit::truncate(name)),
            Target::Named { owner, name } => Some(audit::truncate(&format!("{owner}/{name}"))),
            Target::Elsewhere { url } => Some(audit::truncate(url)),
        };
    }

    /// The pipeline's repository, when the caller named none.
    pub fn pipeline_repository(&mut self, full_name: &str) {
        if self.record.requested_repository.is_none() {
            self.record.requested_repository = Some(audit::truncate(full_name));
        }
    }

    /// The "not mine" answer. Authorized only if a profile's rules were evaluated.
    pub fn not_mine(&mut self, why: &NotMine) {
        self.record.authorized = self.record.profile.is_some();
        self.record.error = Some(why.to_string());
    }

    /// A token handed out.
    pub fn issued(&mut self, issued: &Issued) {
        self.record.authorized = true;
        self.record.vended = Some(Vended {
            repositories: issued.repositories().to_vec(),
            permissions: issued.permissions.clone(),
            expiry: time::rfc3339(issued.end_of_life),
            hashed_token: issued.minted.hashed_token.clone(),
            cache: issued.cache.as_str(),
            revoke_at: issued
                .revoked_early
                .then(|| time::rfc3339(issued.end_of_life)),
        });
    }

    /// A refusal: its precise reason, and what a rejected token showed before it failed.
    pub fn refused(&mut self, refusal: &Refusal, now: u64) {
        if let Refusal::InvalidToken(rejected) = refusal {
            self.record.jwt = Some(JwtInfo {
                kid: rejected.kid.clone(),
                claims: rejected.claims.clone(),
                now,
            });
            self.record.pipeline = rejected.claims.clone().map(PipelineInfo);
        }
        self.record.error = Some(refusal.to_string());
    }

    /// The issued token was withheld (its record could not be written): nothing was vended.
    pub fn withheld(&mut self) {
        self.record.vended = None;
    }

    /// Writes the record of an answer with `status` that carries a token, now, before it is sent
    /// (its duration is the time since `started`). Under [`OnFailure::Refuse`] a record that
    /// cannot be written is not kept (the caller withholds the token and writes the record of
    /// that instead); under [`OnFailure::Serve`] it waits for the sink.
    pub fn write_before_sending(
        &mut self,
        status: u16,
        started: Instant,
        audit: &AuditLog,
    ) -> Result<(), WriteError> {
        self.record.status = status;
        self.record.duration_ms = millis(started.elapsed());
        self.record.time = time::rfc3339_millis(time::now_unix_millis());
        match audit.policy() {
            OnFailure::Refuse => audit.write_now(&self.record),
            OnFailure::Serve => audit.write(&self.record),
        }
    }

    /// After [`Trail::write_before_sending`]: a short `delivery` record with the same request id
    /// if `response` does not reach its client.
    pub fn delivery_when_sent(self, response: Response, audit: Arc<AuditLog>) -> Response {
        let request_id = self.record.request_id;
        response.on_sent(move |sent: &Sent| {
            if !sent.written {
                let time = time::rfc3339_millis(time::now_unix_millis());
                let delivery =
                    Delivery::new(&request_id, sent.status, false, millis(sent.duration), time);
                let _ = audit.write(&delivery);
            }
        })
    }

    /// Writes the record to `audit` once `response` is sent, with its status and duration.
    pub fn write_when_sent(self, response: Response, audit: Arc<AuditLog>) -> Response {
        let mut record = self.record;
        response.on_sent(move |sent: &Sent| {
            record.status = sent.status;
            record.duration_ms = millis(sent.duration);
            record.time = time::rfc3339_millis(time::now_unix_millis());
            let _ = audit.write(&record);
        })
    }
}

/// Milliseconds with one decimal.
fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}
