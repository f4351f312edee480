"""Interop check with a stock client: Python grpcio with stubs generated from proto/.

Run against a server on 127.0.0.1:17443 whose data directory is $EDGECHAT_DATA (see
README.md in this folder). Registers alice and bob, so use a fresh data directory.
"""
import base64, json, os, queue, threading, time, grpc, sys

DATA = os.environ.get("EDGECHAT_DATA", "./data")
from edgechat.v1 import auth_pb2 as A, auth_pb2_grpc as AG, rooms_pb2 as R, rooms_pb2_grpc as RG
from edgechat.v1 import chat_pb2 as C, chat_pb2_grpc as CG, common_pb2 as M

creds = grpc.ssl_channel_credentials(open(DATA + '/certs/ca.pem', 'rb').read())
ch = grpc.secure_channel('localhost:17443', creds)
auth = AG.AuthServiceStub(ch); rooms = RG.RoomServiceStub(ch); chat = CG.ChatServiceStub(ch)
def md(t): return [('authorization', 'Bearer ' + t)]
def code(f):
    try: f(); return 'OK'
    except grpc.RpcError as e: return e.code().name + ': ' + e.details()

a = auth.Register(A.RegisterRequest(username='Alice', password='correct horse', display_name='Alice'))
print('register', a.user.username, a.user.role)
b = auth.Register(A.RegisterRequest(username='bob', password='correct horse'))
l = auth.Login(A.LoginRequest(username='alice', password='correct horse'))
r = auth.Refresh(A.RefreshRequest(refresh_token=l.refresh_token))
print('whoami', auth.WhoAmI(A.WhoAmIRequest(), metadata=md(r.access_token)).username)
print('reuse spent refresh ->', code(lambda: auth.Refresh(A.RefreshRequest(refresh_token=l.refresh_token))))
tok = a.access_token
h, p, s = tok.split('.')
def b64(d): return base64.urlsafe_b64encode(d).rstrip(b'=').decode()
def unb64(x): return base64.urlsafe_b64decode(x + '=' * (-len(x) % 4))
claims = json.loads(unb64(p))
forged = {
  'alg none': b64(b'{"alg":"none"}') + '.' + p + '.',
  'tampered': h + '.' + b64(json.dumps(dict(claims, role='admin')).encode()) + '.' + s,
  'exp moved to the past (signature breaks)': h + '.' + b64(json.dumps(dict(claims, exp=1)).encode()) + '.' + s,
  'garbage': 'x.y.z',
  'huge': 'a' * 9000,
}
for k, t in forged.items():
    print('forged', k, '->', code(lambda: auth.WhoAmI(A.WhoAmIRequest(), metadata=md(t))))
print('two auth headers ->', code(lambda: auth.WhoAmI(A.WhoAmIRequest(), metadata=md(tok) + md(tok))))
print('bad username ->', code(lambda: auth.Register(A.RegisterRequest(username='x!', password='correct horse'))))
room = rooms.CreateRoom(R.CreateRoomRequest(name='general', visibility=M.VISIBILITY_PUBLIC), metadata=md(tok))
rooms.JoinRoom(R.JoinRoomRequest(room_id=room.id), metadata=md(b.access_token))
# Connect stream for bob: subscribe, receive alice's message, typing, notification.
out = queue.Queue()
def frames():
    yield C.ClientFrame(subscribe=C.Subscribe(room_id=room.id, after_seq=0))
    while True:
        f = out.get()
        if f is None: return
        yield f
got = []
stream = chat.Connect(frames(), metadata=md(b.access_token))
def reader():
    for f in stream:
        got.append(f)
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.5)
m = chat.SendMessage(C.SendMessageRequest(room_id=room.id, client_message_id='py-1', text='hi @bob'), metadata=md(tok))
m2 = chat.SendMessage(C.SendMessageRequest(room_id=room.id, client_message_id='py-1', text='retry'), metadata=md(tok))
print('send seq', m.seq, 'retry seq', m2.seq, 'mentions', list(m.mention_user_ids) == [b.user.id])
out.put(C.ClientFrame(send=C.Send(room_id=room.id, client_message_id='bob-1', text='hello from bob')))
out.put(C.ClientFrame(ping=C.Ping(nonce=7)))
time.sleep(1)
kinds = [f.WhichOneof('kind') for f in got]
print('bob stream frames', kinds)
events = [f.event.seq for f in got if f.WhichOneof('kind') == 'event']
print('event seqs', events)
h = chat.History(C.HistoryRequest(room_id=room.id, before_seq=0, limit=2), metadata=md(b.access_token))
print('history newest 2', [e.seq for e in h.events], 'has_more', h.has_more)
h = chat.History(C.HistoryRequest(room_id=room.id, after_seq=1, limit=10), metadata=md(b.access_token))
print('history after 1', [e.seq for e in h.events], 'has_more', h.has_more)
lr = rooms.ListRooms(R.ListRoomsRequest(), metadata=md(b.access_token))
print('bob unread/mentions', [(x.name, x.unread_count, x.mention_count) for x in lr.rooms])
n = chat.ListNotifications(C.ListNotificationsRequest(after_id=0), metadata=md(b.access_token))
print('bob notifications', [(x.id, M.NotificationKind.Name(x.kind)) for x in n.notifications])
p = chat.GetPresence(C.GetPresenceRequest(user_ids=[b.user.id]), metadata=md(tok))
print('bob presence', [M.PresenceStatus.Name(x.status) for x in p.presences])
out.put(None)
