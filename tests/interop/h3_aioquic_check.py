# A gRPC-over-HTTP/3 call made with aioquic (a third-party QUIC/HTTP3 stack), by hand:
# gRPC framing over an HTTP/3 POST, status read from the trailers.
import asyncio, os, struct, sys
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from edgechat.v1 import auth_pb2 as A

DATA = os.environ.get("EDGECHAT_DATA", "./data")

class Client(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.h3 = H3Connection(self._quic)
        self.done = asyncio.get_event_loop().create_future()
        self.headers, self.data = [], b""
    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.headers.append(ev.headers)
                if ev.stream_ended and not self.done.done(): self.done.set_result(True)
            elif isinstance(ev, DataReceived):
                self.data += ev.data
                if ev.stream_ended and not self.done.done(): self.done.set_result(True)

async def main():
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    cfg.load_verify_locations(DATA + "/certs/ca.pem")
    cfg.server_name = "localhost"
    async with connect("127.0.0.1", 17443, configuration=cfg, create_protocol=Client) as c:
        body = A.RegisterRequest(username=sys.argv[1], password="correct horse").SerializeToString()
        sid = c._quic.get_next_available_stream_id()
        c.h3.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost:17443"),
            (b":path", b"/edgechat.v1.AuthService/Register"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
        c.h3.send_data(sid, b"\x00" + struct.pack(">I", len(body)) + body, end_stream=True)
        c.transmit()
        await asyncio.wait_for(c.done, 10)
        for h in c.headers: print([(k.decode(), v.decode()) for k, v in h if k.startswith(b"grpc") or k == b":status"])
        if len(c.data) > 5:
            r = A.AuthResponse(); r.ParseFromString(c.data[5:]); print("registered", r.user.username, "token", r.access_token[:20] + "...")
asyncio.run(main())
