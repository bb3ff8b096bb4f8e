"""A tiny MySQL client for kindling-flow's live_mysql test: logs in with
mysql_native_password (CLIENT_DEPRECATE_EOF asked), then reads one command a
line from stdin -- `query SQL`, `ping`, `fields TABLE` (COM_FIELD_LIST),
`quit` -- sends it, drains the answer and prints `done`. Commands the
`mariadb` client does not send on demand (COM_PING, COM_FIELD_LIST) are sent
as such."""
import hashlib
import select
import socket
import struct
import sys
import time

host, port, user, password, db = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
s = socket.create_connection((host, port))


def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("closed")
        b += c
    return b


def packet():
    h = exact(4)
    return h[3], exact(h[0] | h[1] << 8 | h[2] << 16)


def send(seq, payload):
    s.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)


_, g = packet()
i = g.index(b"\0", 1) + 1 + 4
salt = g[i : i + 8]
i += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
salt += g[i : i + 12]
h1 = hashlib.sha1(password.encode()).digest()
h3 = hashlib.sha1(salt + hashlib.sha1(h1).digest()).digest()
auth = bytes(a ^ b for a, b in zip(h1, h3))
# PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | DEPRECATE_EOF
caps = 0x200 | 0x8000 | 0x80000 | 0x8 | 0x1000000
send(
    1,
    struct.pack("<IIB", caps, 1 << 24, 33)
    + b"\0" * 23
    + user.encode()
    + b"\0"
    + bytes([len(auth)])
    + auth
    + db.encode()
    + b"\0"
    + b"mysql_native_password\0",
)
_, r = packet()
if r[0] != 0:
    sys.exit(f"login failed: {r!r}")
print("ready", flush=True)


def drain():
    time.sleep(0.05)
    while select.select([s], [], [], 0.3)[0]:
        if not s.recv(65536):
            break


for line in sys.stdin:
    cmd, _, arg = line.rstrip("\n").partition(" ")
    if cmd == "query":
        send(0, b"\x03" + arg.encode())
    elif cmd == "ping":
        send(0, b"\x0e")
    elif cmd == "fields":
        send(0, b"\x04" + arg.encode() + b"\0")
    elif cmd == "quit":
        send(0, b"\x01")
        break
    drain()
    print("done", flush=True)
