"""TLS for ``aio.Connection``: an ``ssl.SSLObject`` over a plain TCP transport.

asyncio's TLS transport (and uvloop's) has no half-close: ``can_write_eof()``
is False, close_notify goes out only as it closes, and its SSL object is its
own. So socketeer runs TLS itself, the way trio's ``SSLStream`` and
asyncio's ``sslproto`` do: the socket's bytes go into one ``MemoryBIO``, the
SSL object decrypts them into the connection's ``StreamProtocol``, and what it
encrypts comes out of another ``MemoryBIO`` onto the plain transport.

Owning the incoming BIO is what makes the half-close possible (SPEC §5 on
``tls://``, docs/tls.md "Half-close"). ``unwrap()`` runs SSL_shutdown twice:
the first writes close_notify, the second reads, and OpenSSL fails that read
on application data (APPLICATION_DATA_AFTER_CLOSE_NOTIFY). Here the read only
sees what was fed: every record fed is decrypted first, so it finds nothing,
raises ``SSLWantReadError``, and the session stays open for reading until the
peer's close_notify (``SSLZeroReturnError``: EOF) or its FIN.

``TLSProtocol`` is the plain transport's protocol; ``TLSTransport`` is what
the ``StreamProtocol`` (and ``aio.Connection``) sees: an ``asyncio.Transport``
whose ``write`` encrypts and whose ``write_eof`` sends close_notify.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any, cast

from ._protocol import StreamProtocol

# Ciphertext is read from the socket this much at a time (up to 16 records);
# plaintext is decrypted straight into the StreamProtocol's receive area.
TLS_READ_CHUNK = 256 * 1024
# Plaintext is encrypted this much at a time, so a large send does not hold
# its whole ciphertext at once before the transport takes it.
ENCRYPT_CHUNK = 256 * 1024

_per_thread = threading.local()


def _ciphertext_area() -> memoryview:
    """One socket read area per thread (per loop), as ``shared_read_buffer``.

    Its bytes are copied into the incoming BIO before the loop reads again.
    """
    view: memoryview | None = getattr(_per_thread, "view", None)
    if view is None:
        view = _per_thread.view = memoryview(bytearray(TLS_READ_CHUNK))
    return view


class TLSProtocol(asyncio.BufferedProtocol):
    """TLS over a plain transport, delivering plaintext to a ``StreamProtocol``.

    ``handshake`` is done (or failed) when the handshake is; the
    ``StreamProtocol`` gets ``connection_made(tls_transport)`` then.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        app: StreamProtocol,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self.app = app
        self.raw: asyncio.Transport | None = None
        self.tls_transport = TLSTransport(self)
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.write_closed = False  # our close_notify is out
        self._open = False  # the handshake is done: plaintext flows
        self.app_paused = False  # the StreamProtocol asked for no more data
        self._peer_eof = False  # the peer's close_notify or FIN
        self._ended = False  # the StreamProtocol has had its EOF (or the error)
        self._resume_scheduled = False
        self._error: Exception | None = None  # a record that failed: the app's error

    # -- the plain transport's callbacks -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)  # uvloop's implement it, not subclass
        self._step_handshake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _ciphertext_area()

    def buffer_updated(self, nbytes: int) -> None:
        self._incoming.write(_ciphertext_area()[:nbytes])
        if self._open:
            self._decrypt()
        elif not self.handshake.done():
            self._step_handshake()

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._open:
            self._decrypt()
        elif not self.handshake.done():
            self._incoming.write_eof()  # the handshake fails as "unexpected eof"
            self._step_handshake()
        return True  # keep the socket: we may still write (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._open:
            if not self.handshake.done():
                self.handshake.set_exception(
                    exc or ConnectionResetError("connection lost during the TLS handshake")
                )
            return
        self._decrypt(force=True)  # what arrived before the end is read first
        if self._error is not None:
            exc = self._error
        elif self.write_closed and isinstance(exc, ConnectionResetError):
            exc = None  # a peer that answers our close_notify with a reset: a clean end
        self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._open:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self._open:
            self.app.resume_writing()

    # -- handshake ---------------------------------------------------------------------

    def _step_handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert that says why, for the peer
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            return
        self._flush()
        if self.handshake.done():
            return  # given up on (timed out) as it finished
        self._open = True
        self.handshake.set_result(None)
        self.app.connection_made(self.tls_transport)
        self._decrypt()  # bytes that came with the handshake's last flight

    # -- reading -----------------------------------------------------------------------

    def _decrypt(self, force: bool = False) -> None:
        """Hand the app every byte the fed records hold (``force``: even if it paused)."""
        if self._ended or (self.app_paused and not force):
            return
        drained = False
        try:
            while not drained and (force or not self.app_paused):
                drained = self._fill_app()
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        self._flush()  # a TLS 1.3 key update answered, say
        if drained and self._peer_eof and not self._ended:
            self._ended = True
            self.app.eof_received()

    def _fill_app(self) -> bool:
        """Decrypt into the app's receive area, one record a read, until it is full.

        One ``buffer_updated`` per area, not per 16 KiB record (as asyncio's
        ``sslproto``): True once every byte fed is read out.
        """
        view = self.app.get_buffer(-1)
        filled = 0
        try:
            while filled < len(view):
                count = cast(int, self.sslobj.read(len(view) - filled, view[filled:]))
                if not count:  # the peer's close_notify, before ours
                    self._peer_eof = True
                    return True
                filled += count
        except ssl.SSLWantReadError:
            return True
        except ssl.SSLZeroReturnError:  # the peer's close_notify, after ours
            self._peer_eof = True
            return True
        finally:
            if filled:
                self.app.buffer_updated(filled)
        return False

    def _fail(self, exc: Exception) -> None:
        """A record that does not decrypt: the socket is dropped, the app gets ``exc``."""
        self._ended = True
        self._error = exc
        if self.raw is not None:
            self.raw.abort()  # its connection_lost tells the app

    def _resume(self) -> None:
        self._resume_scheduled = False
        self._decrypt()

    # -- writing -----------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the SSL object has encrypted onto the socket."""
        if self._outgoing.pending and self.raw is not None and not self.raw.is_closing():
            self.raw.write(self._outgoing.read())

    def encrypt(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt onto the socket; a session that cannot is dropped, as a failed read is."""
        view = memoryview(data).cast("B")
        try:
            for start in range(0, len(view), ENCRYPT_CHUNK):
                self.sslobj.write(view[start : start + ENCRYPT_CHUNK])
                self._flush()
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert, if OpenSSL wrote one
            self._fail(exc)

    def close_notify(self) -> None:
        """Send close_notify, after everything written; reading goes on (module notes)."""
        if self.write_closed:
            return
        self.write_closed = True
        self._decrypt(force=True)  # the incoming BIO empty: SSL_shutdown's read finds nothing
        try:
            self.sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the expected end: ours written, the peer's not here yet
        except ssl.SSLError:
            pass  # a session that failed already: only the record, if any, goes out
        self._flush()

    def pause_app(self) -> None:
        self.app_paused = True
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_app(self) -> None:
        self.app_paused = False
        if self.raw is not None and not self.raw.is_closing():
            self.raw.resume_reading()
        # Records already fed are handed over on the next turn, not in this call:
        # the reader that resumed has not made its waiter yet.
        if not self._resume_scheduled:
            self._resume_scheduled = True
            asyncio.get_running_loop().call_soon(self._resume)


class TLSTransport(asyncio.Transport):
    """The transport a ``StreamProtocol`` sees over TLS: plaintext in, plaintext out."""

    def __init__(self, tls: TLSProtocol) -> None:
        super().__init__()
        self._tls = tls
        self._closing = False

    @property
    def _raw(self) -> asyncio.Transport:
        assert self._tls.raw is not None, "made once the plain transport is"
        return self._tls.raw

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._tls.sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return sslobj.context
        if name == "peercert":
            return sslobj.getpeercert()
        if name == "cipher":
            return sslobj.cipher()
        if name == "compression":
            return sslobj.compression()
        return self._raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._tls.write_closed:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing or self._raw.is_closing():
            return  # as asyncio's transports: the caller checks is_closing()
        self._tls.encrypt(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The TLS half-close: close_notify, and the socket still read."""
        if not self._raw.is_closing():
            self._tls.close_notify()

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def close(self) -> None:
        """close_notify (unless sent), then the socket closes once its buffer is written."""
        if self._closing:
            return
        self._closing = True
        if not self._raw.is_closing():
            self._tls.close_notify()
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    def pause_reading(self) -> None:
        self._tls.pause_app()

    def resume_reading(self) -> None:
        self._tls.resume_app()

    def is_reading(self) -> bool:
        return not self._tls.app_paused and self._raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls.app = cast(StreamProtocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._tls.app


async def start_tls(
    sock: Any,
    context: ssl.SSLContext,
    app: StreamProtocol,
    *,
    server_side: bool,
    server_hostname: str | None,
    timeout: float,
    where: str,
) -> TLSTransport:
    """Run the handshake on a connected non-blocking socket; the transport once done.

    Raises:
        TLSError: the handshake failed, a reset or an early EOF included, as
            ``tls.wrap_client`` says it (the socket is closed then).
        Timeout: it took more than ``timeout`` seconds (the socket is closed).
    """
    from ..errors import Timeout, TLSError
    from ..tls import tls_error

    loop = asyncio.get_running_loop()
    tls: TLSProtocol | None = None
    try:
        tls = TLSProtocol(context, app, server_side=server_side, server_hostname=server_hostname)
        await loop.connect_accepted_socket(lambda: tls, sock)
        await asyncio.wait_for(tls.handshake, timeout)  # cancelled on timeout
    except BaseException as exc:
        if tls is not None and tls.raw is not None:
            tls.raw.abort()
        sock.close()
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            raise Timeout(f"TLS handshake timed out after {timeout:g}s: {where}") from None
        if isinstance(exc, OSError):  # ssl.SSLError included
            raise tls_error(exc, where) from exc
        if isinstance(exc, ValueError):  # wrap_bio: a server name it cannot send
            raise TLSError(f"TLS handshake failed: {exc}: {where}") from exc
        raise
    return tls.tls_transport
