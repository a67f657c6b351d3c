"""A raw HTTP/2 client for calls grpc's own client cannot make: open a call and never send its message.

Each connection runs a reader thread that answers the server's SETTINGS and PINGs (h2 does that
when fed the bytes), so the connection stays healthy and only the calls on it are stalled.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.support.tls import transport


def grpc_frame(message: bytes) -> bytes:
    return struct.pack(">?I", False, len(message)) + message


READ_SLICE_SECONDS = 0.005


def _tls_context() -> ssl.SSLContext:
    """The servers speak mutual TLS only: present the operator's development certificate, speak h2."""
    files = transport()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_path)
    context.load_cert_chain(files.certificate_path, files.key_path)
    context.set_alpn_protocols(["h2"])
    return context


class RawGrpcConnection:
    def __init__(self, address: str, source_host: str = "127.0.0.1") -> None:
        host, port = address.rsplit(":", 1)
        self._authority = address
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        plain.bind((source_host, 0))
        plain.connect((host, int(port)))
        self._socket = _tls_context().wrap_socket(plain, server_hostname=host)
        self._socket.settimeout(READ_SLICE_SECONDS)
        self._lock = threading.Lock()
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.closed_streams: dict[int, dict[str, str]] = {}  # stream id -> trailers (or headers) received
        self.reset_streams: set[int] = set()
        self.terminated = threading.Event()
        with self._lock:
            self._h2.initiate_connection()
            self._flush()
        self._reader = threading.Thread(target=self._read_forever, daemon=True, name="raw-h2")
        self._reader.start()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._socket.sendall(data)

    def open_call(self, path: str, message: bytes | None = None) -> int:
        """Start a call on `path`; send `message` (and end the stream) only if given."""
        with self._lock:
            stream_id = self._h2.get_next_available_stream_id()
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", path),
                (":authority", self._authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
            self._h2.send_headers(stream_id, headers, end_stream=False)
            if message is not None:
                self._h2.send_data(stream_id, grpc_frame(message), end_stream=True)
            self._flush()
        return stream_id

    def _read_forever(self) -> None:
        try:
            while True:
                # One TLS connection may not be read and written by two threads at once: the
                # reader holds the lock while it reads, a few milliseconds at a time.
                with self._lock:
                    try:
                        data = self._socket.recv(65_536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    for event in self._h2.receive_data(data):
                        self._on_event(event)
                    self._flush()
        except (OSError, h2.exceptions.ProtocolError):  # closed by us or by the server
            return
        finally:
            self.terminated.set()

    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived) or (
            isinstance(event, h2.events.ResponseReceived) and event.stream_ended  # a trailers-only answer
        ):
            self.closed_streams[event.stream_id] = dict(event.headers)
        elif isinstance(event, h2.events.StreamReset):
            self.reset_streams.add(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated.set()

    def close(self) -> None:
        try:
            with self._lock:
                self._h2.close_connection()
                self._flush()
        except Exception:  # the server may have closed it already
            pass
        with contextlib.suppress(OSError):  # wakes the reader; close() alone would not
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        self._reader.join(timeout=5)
