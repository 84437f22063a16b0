#!/usr/bin/python3
"""TCP and UDP echo on one address and port, a thread per TCP connection.

    echo_server.py ADDRESS PORT

The target of integration/attack_test.sh: run under `shunt run` for shunt, and
plainly in a namespace with a kernel address for Linux. A connection ends when
the peer closes or resets it; the server runs until it is killed.
"""
import socket
import sys
import threading


def serve_connection(conn):
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                conn.sendall(data)
            except OSError:
                return


def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(1024)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))
    threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
