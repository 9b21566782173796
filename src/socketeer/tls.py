"""TLS settings and contexts: secure by default (SPEC §1 ``tls://``, §2 ``tls=``, §5).

A client verifies the server's certificate against the system trust store (or
``ca``) and checks the host name; ``insecure`` must be asked for; ``pin``
accepts exactly one certificate by its SHA-256 fingerprint instead. TLS 1.2
is the minimum. A server needs a certificate and key; ``ca`` on a server
means "require a client certificate signed by this CA".

The TLS half-close (close_notify, the socket still read) lives here once
(``close_notify``), for ``Connection.shutdown_write``, the stream commands
and every relay model.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from dataclasses import dataclass, field

from .errors import Timeout, TLSError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .address import Address

__all__ = [
    "TLSConfig",
    "client_context",
    "close_notify",
    "fingerprint",
    "server_context",
    "shutdown_write",
]


@dataclass(frozen=True)
class TLSConfig:
    """What the CLI's TLS options say; pass it as ``tls=`` to connect/listen."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    server_name: str | None = None
    alpn: tuple[str, ...] = field(default_factory=tuple)
    pin: str | None = None

    @property
    def pin_hex(self) -> str | None:
        if self.pin is None:
            return None
        return self.pin.replace(":", "").lower()


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as hex (what ``--pin`` takes)."""
    return hashlib.sha256(der).hexdigest()


def _load(context: ssl.SSLContext, config: TLSConfig, *, server: bool) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.alpn:
        context.set_alpn_protocols(list(config.alpn))
    if config.cert or config.key:
        if not config.cert:
            raise UsageError("--key needs --cert")
        try:
            context.load_cert_chain(config.cert, config.key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load certificate {config.cert}: {_reason(exc)}") from None
    elif server:
        raise UsageError("a TLS server needs --cert and --key")


def client_context(config: TLSConfig) -> ssl.SSLContext:
    """The context a client connects with.

    Raises:
        UsageError: a certificate or CA file that does not load.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _load(context, config, server=False)
    if config.insecure or config.pin is not None:
        # --pin checks the certificate itself after the handshake.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca:
        try:
            context.load_verify_locations(cafile=config.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA {config.ca}: {_reason(exc)}") from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def server_context(config: TLSConfig) -> ssl.SSLContext:
    """The context a server accepts with; ``ca`` requires client certificates.

    Raises:
        UsageError: no certificate, or files that do not load.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(context, config, server=True)
    if config.ca:
        try:
            context.load_verify_locations(cafile=config.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA {config.ca}: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def tls_error(exc: ssl.SSLError | OSError, where: str) -> TLSError:
    """One line that names the cause: untrusted, expired, wrong host, not TLS at all."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        return TLSError(f"certificate verify failed: {detail}: {where}")
    if isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        if any(
            s in reason for s in ("wrong version number", "record layer failure", "http request")
        ):
            reason += " (is the peer speaking TLS?)"
        return TLSError(f"TLS handshake failed: {reason}: {where}")
    return TLSError(f"TLS handshake failed: {exc.strerror or exc}: {where}")


TLSOption = TLSConfig | ssl.SSLContext | bool | None

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def client_setup(tls: object) -> tuple[ssl.SSLContext, TLSConfig]:
    """The context and settings for ``tls=`` (a TLSConfig, an SSLContext, or True).

    Raises:
        UsageError: files that do not load (before any connection is made).
    """
    config = tls if isinstance(tls, TLSConfig) else TLSConfig()
    context = tls if isinstance(tls, ssl.SSLContext) else client_context(config)
    return context, config


def server_hostname(config: TLSConfig, target: Address) -> str:
    """The name a client sends (SNI) and verifies: ``--server-name``, else the host."""
    return config.server_name or target.host or "localhost"


def check_pin(tls_socket: ssl.SSLSocket | ssl.SSLObject, config: TLSConfig, where: object) -> None:
    """With ``--pin``, the peer's certificate must be that one.

    Raises:
        TLSError: a pin was given and the certificate is another (the caller closes).
    """
    if config.pin_hex is None:
        return
    seen = fingerprint(tls_socket.getpeercert(binary_form=True) or b"")
    if seen != config.pin_hex:
        raise TLSError(f"certificate pin mismatch: the server's is {seen}: {where}")


def wrap_client(
    sock: object, target: object, setup: tuple[ssl.SSLContext, TLSConfig], timeout: float | None
) -> ssl.SSLSocket:
    """Run the client handshake on a connected socket; checks the pin if one was given.

    Raises:
        TLSError: verification or handshake failure (one line naming the cause).
        Timeout: the handshake did not finish in time.
    """
    import socket as _socket

    from .address import Address

    assert isinstance(sock, _socket.socket) and isinstance(target, Address)
    context, config = setup
    server_name = server_hostname(config, target)
    where = str(target)
    try:
        wrapped = context.wrap_socket(
            sock, server_hostname=server_name, do_handshake_on_connect=False
        )
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise tls_error(exc, where) from exc
    limit = timeout if timeout is not None else DEFAULT_HANDSHAKE_TIMEOUT
    try:
        wrapped.settimeout(limit)
        wrapped.do_handshake()
        wrapped.settimeout(None)
    except TimeoutError:
        wrapped.close()
        raise Timeout(f"TLS handshake timed out after {limit:g}s: {where}") from None
    except (ssl.SSLError, OSError) as exc:
        wrapped.close()
        raise tls_error(exc, where) from exc
    try:
        check_pin(wrapped, config, where)
    except TLSError:
        wrapped.close()
        raise
    return wrapped


def wrap_server(
    sock: object, context: ssl.SSLContext, where: str, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
) -> ssl.SSLSocket:
    """Run the server handshake on an accepted socket.

    Raises:
        TLSError, Timeout: as ``wrap_client``.
    """
    import socket as _socket

    assert isinstance(sock, _socket.socket)
    wrapped: ssl.SSLSocket | None = None
    try:
        wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        wrapped.settimeout(timeout)
        wrapped.do_handshake()
        wrapped.settimeout(None)
    except TimeoutError:
        (wrapped or sock).close()  # the SSLSocket owns the descriptor once made
        raise Timeout(f"TLS handshake timed out after {timeout:g}s: {where}") from None
    except (ssl.SSLError, OSError) as exc:
        (wrapped or sock).close()
        raise tls_error(exc, where) from exc
    return wrapped


# -- half-close -------------------------------------------------------------------------


def close_notify(sock: ssl.SSLSocket) -> bytes:
    """Have ``sock``'s session write its close_notify, and return that record unsent.

    TLS half-closes with close_notify: the peer reads EOF, and we go on
    reading what it still sends until its own close_notify (or its FIN). The
    record comes back as bytes because the caller knows how it writes
    (blocking, or an outbox on a loop): sent raw on the socket, after every
    byte written before it (``send_raw``).

    Python's ``ssl`` has no call that only sends: ``unwrap()`` runs
    SSL_shutdown, and when that has sent close_notify it runs it a second
    time at once, to read the peer's. That read takes whatever is in the
    socket, and OpenSSL fails on application data there (the session is then
    lost, with the data), which is what a peer still sending has in flight.
    So for that one call the descriptor is swapped (``dup2``) for one end of a
    fresh socket pair: the record is written into it, the read finds nothing
    ("want read"), and the real socket is put back untouched, its readiness
    registrations and all. The session stays open for reading: OpenSSL reads
    application data after our close_notify until the peer's arrives; once
    it does, ``recv`` raises ``SSLZeroReturnError``, which readers take as EOF
    (``_flow.tls_closed``).

    Decrypted bytes not yet read (``sock.pending()``) would be read by that
    second SSL_shutdown too, and fail the same way: the caller reads them out
    first. Once per connection end, never per read.

    Raises:
        ValueError: ``sock.pending()`` is not zero.
        OSError: no socket pair could be made (EMFILE).
    """
    import os
    import socket as _socket

    if sock.pending():
        raise ValueError("read the decrypted bytes (pending()) before close_notify")
    fd = sock.fileno()
    inheritable = os.get_inheritable(fd)
    timeout = sock.gettimeout()
    ours, theirs = _socket.socketpair()
    saved = -1
    try:
        ours.setblocking(False)
        theirs.setblocking(False)
        saved = os.dup(fd)
        os.dup2(ours.fileno(), fd, inheritable=False)
        try:
            sock.settimeout(0)  # the want-read ends the call instead of a wait
            sock.unwrap()  # sends, then reads: "want read" from the empty pair
        except ssl.SSLWantReadError:
            pass  # the expected end: close_notify written, the peer's not read
        except (ssl.SSLError, ValueError):
            # A session that failed already, or one unwrap let go of (a second
            # half-close after the peer's close_notify): nothing to send.
            pass
        finally:
            os.dup2(saved, fd, inheritable=inheritable)
            sock.settimeout(timeout)
        chunks = []
        while True:
            try:
                chunk = theirs.recv(4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if saved >= 0:
            os.close(saved)
        ours.close()
        theirs.close()


def send_raw(sock: ssl.SSLSocket, record: bytes | memoryview) -> int:
    """Write ``record`` on ``sock``'s descriptor, below TLS; the count written.

    A blocking socket (or one with a timeout) takes it all, as ``sendall``
    does, within its timeout.

    Raises:
        OSError: the write failed; BlockingIOError on a non-blocking socket that is full.
    """
    import socket as _socket

    if sock.gettimeout() == 0:
        return _socket.socket.send(sock, record)
    _socket.socket.sendall(sock, record)
    return len(record)


def read_decrypted(sock: ssl.SSLSocket) -> bytes:
    """The bytes ``sock`` has decrypted and not handed out yet (what ``pending()`` counts)."""
    chunks = []
    while sock.pending():
        chunks.append(sock.recv(sock.pending()))
    return b"".join(chunks)


def shutdown_write(sock: ssl.SSLSocket) -> bytes:
    """A blocking TLS half-close: close_notify sent, within the socket's timeout.

    Returns the decrypted bytes it had to read out first (the caller's reader
    gets them, in order, before anything it reads afterwards).

    Raises:
        OSError: sending failed (TimeoutError when the socket's timeout passed).
    """
    early = read_decrypted(sock)
    send_raw(sock, close_notify(sock))
    return early


class SteppedHandshake:
    """A handshake on a non-blocking socket, advanced whenever the socket is ready.

    ``wrap_server``/``wrap_client`` block until the handshake is done, which
    is right for a thread or a child per connection. A loop that serves many
    clients in one thread (``listen -k``, the event-loop relay) must not stall
    every client on one that never sends its ClientHello, so it registers
    ``sock``, calls ``step()`` on each event and waits for what
    ``wants_write`` says, until ``deadline`` (monotonic).
    """

    sock: ssl.SSLSocket

    def __init__(
        self, sock: object, context: ssl.SSLContext, where: str, timeout: float, **wrap: Any
    ) -> None:
        import socket as _socket
        import time

        assert isinstance(sock, _socket.socket)
        self.where = where
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.wants_write = False
        sock.setblocking(False)
        try:
            self.sock = context.wrap_socket(sock, do_handshake_on_connect=False, **wrap)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise tls_error(exc, where) from exc

    def step(self) -> bool:
        """Advance the handshake; True once it is done.

        Raises:
            TLSError: the handshake failed (the socket is closed then).
        """
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.wants_write = False
            return False
        except ssl.SSLWantWriteError:
            self.wants_write = True
            return False
        except (ssl.SSLError, OSError) as exc:
            self.sock.close()
            raise tls_error(exc, self.where) from exc
        self.verify()
        return True

    def verify(self) -> None:
        """Checks after a finished handshake (a client's pin)."""

    def expire(self) -> Timeout:
        """Close the socket; returns the ``Timeout`` to report."""
        self.sock.close()
        return Timeout(f"TLS handshake timed out after {self.timeout:g}s: {self.where}")


class ServerHandshake(SteppedHandshake):
    """The server side of a stepped handshake (an accepted socket)."""

    def __init__(
        self,
        sock: object,
        context: ssl.SSLContext,
        where: str,
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(sock, context, where, timeout, server_side=True)


class ClientHandshake(SteppedHandshake):
    """The client side of a stepped handshake, with ``wrap_client``'s checks (name, pin)."""

    def __init__(
        self,
        sock: object,
        target: object,
        setup: tuple[ssl.SSLContext, TLSConfig],
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        from .address import Address

        assert isinstance(target, Address)
        context, self.config = setup
        hostname = server_hostname(self.config, target)
        super().__init__(sock, context, str(target), timeout, server_hostname=hostname)

    def verify(self) -> None:
        try:
            check_pin(self.sock, self.config, self.where)
        except TLSError:
            self.sock.close()
            raise


def self_signed(
    hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> tuple[str, str, str]:
    """A temporary certificate and key (files, removed at exit) and its SHA-256 fingerprint.

    Raises:
        UsageError: the ``cryptography`` package is not installed.
    """
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise UsageError(
            "--self-signed needs the cryptography package: pip install 'socketeer[tls]'"
        ) from None
    import atexit
    import os
    import tempfile

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tempfile.mkdtemp(prefix="socketeer-tls-")
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def remove() -> None:
        for path in (cert_path, key_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(folder)

    atexit.register(remove)
    return cert_path, key_path, fingerprint(cert.public_bytes(serialization.Encoding.DER))
