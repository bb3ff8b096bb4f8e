"""Failure scenarios on loopback, one port each (see record.sh):
closed port, a server that never answers, a reset mid-response, a slow
response. Each client speaks HTTP/1.1 with a plain socket."""
import socket
import struct
import sys
import threading
import time

closed, silent, resetting, slow = (int(p) for p in sys.argv[1:5])
REQUEST = b"GET /%s HTTP/1.1\r\nHost: failures\r\n\r\n"


def serve(port, handle):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4)

    def run():
        conn, _ = listener.accept()
        conn.recv(4096)
        handle(conn)
        listener.close()

    t = threading.Thread(target=run)
    t.start()
    return t


def never_answer(conn):
    time.sleep(1.5)  # the client gives up first
    conn.close()


def reset_mid_response(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def answer_slowly(conn):
    time.sleep(0.6)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow\n")
    time.sleep(0.1)
    conn.close()


threads = [
    serve(silent, never_answer),
    serve(resetting, reset_mid_response),
    serve(slow, answer_slowly),
]
time.sleep(0.2)

# 1. nothing listens: the connect is refused
try:
    socket.create_connection(("127.0.0.1", closed), timeout=1)
except ConnectionRefusedError:
    pass

# 2. the server reads the request and never answers; the client gives up
c = socket.create_connection(("127.0.0.1", silent))
c.sendall(REQUEST % b"silent")
c.settimeout(0.5)
try:
    c.recv(4096)
except socket.timeout:
    pass
c.close()

# 3. the server resets the connection in the middle of its response
c = socket.create_connection(("127.0.0.1", resetting))
c.sendall(REQUEST % b"reset")
try:
    while c.recv(65536):
        pass
except ConnectionResetError:
    pass
c.close()

# 4. the server answers after 600 ms (slow: the HTTP threshold is 500 ms)
c = socket.create_connection(("127.0.0.1", slow))
c.sendall(REQUEST % b"slow")
data = b""
while not data.endswith(b"slow\n"):
    data += c.recv(4096)
c.close()

for t in threads:
    t.join()
