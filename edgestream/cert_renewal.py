"""Zero-touch renewal of the edge's tunnel certificate, over the tunnel itself (``renew``).

Beside one tunnel of the edge, ``CertRenewal.start`` arms a timer for when the certificate on disk is due
(``streamcerts.renewal.renewal_due``: 2/3 of its lifetime, or a day left; a task runs only for
a look at the file or a renewal, none while it waits), then generates a new
ECDSA P-256 key, sends a CSR for the same subject and IP SANs, checks the cloud's answer
(``check_issued``) and replaces key and certificate atomically (``streamcerts.pair_files``). Any
failure keeps the old pair and is logged with its fix; the next attempt follows after a
tenth of the remaining lifetime (10 s .. 1 h) or the cloud's retry-after.

Redial: a TLS session outlives its certificate (the handshake is the only check), so nothing
forces a cut. The new pair is used from the next dial; ``watch`` returns (and the caller
redials at once) only once no stream runs: a running ``logs -f`` or exec is never cut for a
renewal. A new tunnel first would cut them: the cloud replaces a node's tunnel on redial and
ends the old one's streams. A node that always has a stream open redials on its next
ordinary reconnect, with the new pair already on disk.

Only with our cloudstream holding the tunnel CA key (it then accepts ``renew``); a Go
cloudcore never sees a renewal message, and the edge says once that renewal needs ours.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from streamcerts import client_context, load_cert
from streamcerts._x509 import cert_ips, new_key
from streamcerts.errors import CertificateError
from streamcerts.pair_files import finish_interrupted, write_pair
from streamcerts.renewal import check_issued, make_csr, renewal_due, serial_hex
from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel import Feature, RenewalAnswer, RenewalStatus, TunnelError

from .config import EdgeConfig
from .session import AgentSession

__all__ = ["CertRenewal", "RenewalWatch", "tls_context"]

logger = logging.getLogger(__name__)

_MAX_SLEEP = 3600.0
"""Seconds: the files are read again at least this often (an operator may replace them)."""
_ANSWER_TIMEOUT = 30.0
_QUIET = 0.5
"""Seconds the tunnel must stay without streams before the redial."""
_RETRY_MIN, _RETRY_MAX = 10.0, 3600.0


def tls_context(config: EdgeConfig, previous: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The client TLS context for the next dial, from the files as they are now (a renewed
    pair is picked up here); finishes a renewal a crash interrupted. When the files no
    longer load, the ``previous`` context is kept (and the failure logged)."""
    note = finish_interrupted(config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file)
    if note:
        logger.warning("! %s", note)
    try:
        return client_context(
            config.tls_tunnel_ca_file, config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file,
            verify=config.verify_server,
        )
    except CertificateError as exc:
        if previous is None:
            raise
        logger.warning("! %s; dialling with the files as they were loaded before", exc)
        return previous


class CertRenewal:
    """One per edge process (request numbers and notices span its tunnels)."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.offer: frozenset[Feature] = frozenset({Feature.RENEW}) if config.cert_renewal else frozenset()
        """What to add to the dial's features."""
        self.renewed = 0
        self._ids = itertools.count(1)
        self._notices = RateLimitedLog(logger, interval=_MAX_SLEEP)

    def start(self, session: AgentSession, on_renewed: Callable[[], None]) -> RenewalWatch:
        """Watch ``session``'s certificate with a timer (no task while it sleeps);
        ``on_renewed`` runs when a renewed pair is on disk and the tunnel has no stream."""
        return RenewalWatch(self, session, on_renewed)

    async def watch(self, session: AgentSession) -> bool:
        """``start``'s watch as one coroutine: True once renewed and quiet; otherwise runs
        until cancelled (a bug here must never end the tunnel)."""
        try:
            while self.config.cert_renewal:
                step = await self._look(session)
                if step is True:
                    return True
                if step is None:
                    break
                await asyncio.sleep(step)
        except Exception:
            logger.exception("! certificate renewal stopped for this tunnel")
        await asyncio.Event().wait()
        return False  # pragma: no cover - never reached

    async def _look(self, session: AgentSession) -> float | bool | None:
        """One look (and a renewal when due): seconds until the next look, True when a renewed
        pair is on disk and the tunnel is quiet (redial), None when this tunnel cannot renew."""
        try:
            cert = await asyncio.to_thread(load_cert, self.config.tls_tunnel_cert_file)
        except CertificateError as exc:
            self._notices.event("unreadable", "! cannot plan the tunnel certificate's renewal: %s", exc)
            return _MAX_SLEEP
        now = time.time()
        not_before, not_after = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        due = renewal_due(not_before, not_after, self.config.renew_fraction, self.config.renew_min_left)
        if due > now:
            return min(due - now, _MAX_SLEEP)
        if Feature.RENEW not in session.features:
            self._not_offered(session, cert)
            return None  # this cloud will not sign: until the next tunnel
        retry = await self._renew(session, cert)
        if retry is None:
            await self._wait_quiet(session)
            return True
        return retry

    def _not_offered(self, session: AgentSession, cert: x509.Certificate) -> None:
        expires = cert.not_valid_after_utc.isoformat(timespec="seconds")
        if not session.features:
            self._notices.event(
                "go cloud", "! the tunnel certificate %s expires %s and is due for renewal, but renewal over the "
                "tunnel needs kubeedge-stream's cloudstream (this cloud is a Go cloudcore): renew it by hand "
                "(streamcerts client --cn %s --ip IP)", self.config.tls_tunnel_cert_file, expires, self.config.node_name,
            )
        else:
            self._notices.event(
                "no ca key", "! the tunnel certificate %s expires %s and is due for renewal, but cloudstream at %s "
                "does not sign renewals: start it with --tunnel-ca-key-file (keadm: /etc/kubeedge/ca/rootCA.key), "
                "or renew the certificate by hand", self.config.tls_tunnel_cert_file, expires, self.config.server,
            )

    async def _renew(self, session: AgentSession, cert: x509.Certificate) -> float | None:
        """One attempt; None when the new pair is on disk, else seconds until the next."""
        config = self.config
        left = cert.not_valid_after_utc.timestamp() - time.time()
        retry = min(max(left / 10, _RETRY_MIN), _RETRY_MAX)
        ips = cert_ips(cert)
        key = await asyncio.to_thread(new_key)
        csr = await asyncio.to_thread(make_csr, key, cert.subject, ips)
        rid = next(self._ids)
        answered: asyncio.Future[RenewalAnswer] = asyncio.get_running_loop().create_future()

        def on_answer(request_id: int, answer: RenewalAnswer) -> None:
            if request_id == rid and not answered.done():
                answered.set_result(answer)

        session.on_renewal_answer = on_answer
        logger.info("= the tunnel certificate (serial %s, expires %s) is due: asking the cloud to renew it",
                    serial_hex(cert), cert.not_valid_after_utc.isoformat(timespec="seconds"))
        try:
            await session.send(session.mux.renewal_request(rid, csr))
            async with asyncio.timeout(_ANSWER_TIMEOUT):
                answer = await answered
        except (TimeoutError, TunnelError) as exc:
            reason = f"no answer within {_ANSWER_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
            logger.warning("! certificate renewal failed (%s); the current certificate is kept, retrying in %.0f s",
                           reason, retry)
            return retry
        finally:
            session.on_renewal_answer = None
        if answer.status is not RenewalStatus.OK:
            wait = float(answer.retry_after) if answer.retry_after else retry
            logger.warning("! the cloud refused to renew the tunnel certificate (%s): %s; the current certificate "
                           "is kept, retrying in %.0f s", answer.status.name.lower(), answer.reason, wait)
            return wait
        try:
            trusted = await asyncio.to_thread(_load_bundle, config.tls_tunnel_ca_file)
            chain = check_issued(answer.chain_pem, key, cert, ips, trusted)
            keep = [chain[0], *(c for c in chain[1:] if c.subject != c.issuer)]  # roots stay in the CA file
            await asyncio.to_thread(
                write_pair, config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file, keep, key
            )
        except CertificateError as exc:
            logger.warning("! the renewed certificate was not installed, the current one is kept: %s; retrying in "
                           "%.0f s", exc, retry)
            return retry
        self.renewed += 1
        logger.info(
            "= renewed the tunnel certificate: serial %s -> %s, valid until %s, written to %s; the next dial uses it",
            serial_hex(cert), serial_hex(chain[0]), chain[0].not_valid_after_utc.isoformat(timespec="seconds"),
            config.tls_tunnel_cert_file,
        )
        return None

    async def _wait_quiet(self, session: AgentSession) -> None:
        if not session.idle.is_set():
            logger.info("= redialling with the renewed certificate once the %d running streams end",
                        len(session.streams))
        while True:
            await session.idle.wait()
            await asyncio.sleep(_QUIET)
            if session.idle.is_set():
                return


def _load_bundle(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError):
        return []


class RenewalWatch:
    """``CertRenewal.start``: a timer between looks, a task only while one runs."""

    def __init__(self, renewal: CertRenewal, session: AgentSession, on_renewed: Callable[[], None]) -> None:
        self._renewal, self._session, self._on_renewed = renewal, session, on_renewed
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[float | bool | None] | None = None
        self._timer: asyncio.Handle | None = self._loop.call_soon(self._look) if renewal.config.cert_renewal else None

    def _look(self) -> None:
        self._timer = None
        self._task = self._loop.create_task(self._renewal._look(self._session), name="cert-renewal")
        self._task.add_done_callback(self._looked)

    def _looked(self, task: asyncio.Task[float | bool | None]) -> None:
        self._task = None
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            logger.error("! certificate renewal stopped for this tunnel: %r", exc, exc_info=exc)
            return
        step = task.result()
        if step is True:
            self._on_renewed()
        elif step is not None:
            self._timer = self._loop.call_later(step, self._look)

    def cancel(self) -> asyncio.Task[float | bool | None] | None:
        """Stop watching; returns the look still running (await it), if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task
