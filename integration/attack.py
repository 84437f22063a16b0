#!/usr/bin/python3
"""Crafted-packet attacks on a TCP/UDP echo server, for shunt and for Linux alike.

    attack.py run --iface IF --target IP --port P --out FILE.json [--only A,B]
                  [--flood N] [--flood-secs S]
    attack.py compare LINUX.json SHUNT.json ALLOW_FILE

`run` attacks integration/echo_server.py at IP:P from the namespace it runs in
(the kernel host): each scenario opens a real kernel connection, learns its
sequence numbers, timestamps and window from a packet socket on IF, sends one
crafted frame (RFC 5961 blind RST, SYN and data injection; PAWS; malformed
headers; LAND; IPv4 fragments; forged ICMP errors, RFC 5927), then records what
came back and whether the connection still works. `--flood N` also sends N
spoofed SYNs from 198.19.0.0/16 (through the target's gateway) while real
clients connect, and records how many of them succeeded.

`compare` holds shunt to Linux: every scenario must give the same result, or be
named in ALLOW_FILE ("name: reason", one a line) with why shunt differs; each
scenario's own requirement (e.g. "connection alive, data not delivered") must
hold for shunt whatever Linux does. Exit status 1 on any failure.

Scapy builds and parses frames; they go out and come in on one AF_PACKET socket.
"""
import argparse
import errno
import json
import os
import random
import select
import socket
import struct
import sys
import time

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, fragment  # noqa: E402

ETH_P_ALL = 3
PACKET_OUTGOING = 4
REPLY_WAIT = 0.4      # seconds: how long a reply to one crafted frame may take
SEQ_FAR = 1 << 30     # outside any window shunt or Linux opens
EVIL = b"EVIL-INJECTED"


def after(a, b):
    """a is later than b in sequence space (RFC 9293 3.4)."""
    return 0 < ((a - b) & 0xFFFFFFFF) < (1 << 31)


class Wire:
    """A packet socket on the interface: send frames, read the target's."""

    def __init__(self, target):
        self.t = target
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.s.bind((target.iface, 0))

    def close(self):
        self.s.close()

    def send(self, pkt):
        # type given: scapy would mark an IPv4 packet passed as raw bytes as 0x9000
        self.s.send(bytes(Ether(src=self.t.my_mac, dst=self.t.mac, type=0x0800) / pkt))

    def frames(self, secs, idle=None):
        """(outgoing, scapy packet) for each IPv4 frame within secs; with idle, ends
        early once no frame came for idle seconds."""
        end = time.monotonic() + secs
        last = time.monotonic()
        while True:
            now = time.monotonic()
            limit = end - now
            if idle is not None:
                limit = min(limit, last + idle - now)
            if limit <= 0:
                return
            r, _, _ = select.select([self.s], [], [], limit)
            if not r:
                continue
            data, addr = self.s.recvfrom(65536)
            last = time.monotonic()
            if len(data) < 34 or data[12:14] != b"\x08\x00":
                continue
            yield addr[2] == PACKET_OUTGOING, Ether(data)


class Target:
    def __init__(self, iface, ip, port):
        self.iface, self.ip, self.port = iface, ip, port
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((iface, 0))
        self.my_mac = ":".join("%02x" % b for b in s.getsockname()[4])
        s.close()
        self.my_ip = self.route_source()
        self.mac = None

    def route_source(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((self.ip, 9))
        ip = s.getsockname()[0]
        s.close()
        return ip


def tcp_ts(pkt):
    for kind, value in pkt[TCP].options:
        if kind == "Timestamp":
            return value
    return None


def tcp_wscale(pkt):
    for kind, value in pkt[TCP].options:
        if kind == "WScale":
            return value
    return 0


class Conn:
    """A real kernel connection to the target, with its state read off the wire."""

    def __init__(self, t):
        self.t = t
        self.wire = Wire(t)
        self.sock = socket.create_connection((t.ip, t.port), timeout=3)
        self.port = self.sock.getsockname()[1]
        self.cli_nxt = self.srv_nxt = None
        self.cli_ts = self.srv_ts = 0
        self.srv_wscale = 0
        self.srv_win = 0
        self.max_segment = 0
        got = self.echo(b"hello")
        if got != b"hello":
            raise RuntimeError("echo through a fresh connection gave %r" % (got,))
        self.track(2.0, idle=0.15)  # until the line is quiet
        if self.cli_nxt is None or self.srv_nxt is None:
            raise RuntimeError("saw no segment of the connection on %s" % t.iface)

    def close(self):
        self.sock.close()
        self.wire.close()

    def mine(self, p):
        return IP in p and TCP in p and {p[TCP].sport, p[TCP].dport} == {self.port, self.t.port}

    def track(self, secs, idle=None):
        """Follows the connection for secs; returns the target's segments seen."""
        replies = []
        for outgoing, p in self.wire.frames(secs, idle):
            if not self.mine(p):
                continue
            tcp = p[TCP]
            end = (tcp.seq + len(tcp.payload) + (1 if tcp.flags & 0x03 else 0)) & 0xFFFFFFFF
            ts = tcp_ts(p)
            if outgoing and p[IP].src == self.t.my_ip:
                if self.cli_nxt is None or after(end, self.cli_nxt):
                    self.cli_nxt = end
                if ts:
                    self.cli_ts = ts[0]
            elif not outgoing and p[IP].src == self.t.ip:
                if self.t.mac is None:
                    self.t.mac = p[Ether].src
                if tcp.flags & 0x02:
                    self.srv_wscale = tcp_wscale(p)
                if self.srv_nxt is None or after(end, self.srv_nxt):
                    self.srv_nxt = end
                if ts:
                    self.srv_ts = ts[0]
                self.srv_win = tcp.window << self.srv_wscale
                self.max_segment = max(self.max_segment, len(tcp.payload))
                replies.append(p)
        return replies

    def echo(self, data, secs=2.0):
        """Sends data, returns what came back within secs (bytes, or an error name)."""
        try:
            self.sock.sendall(data)
            got = b""
            deadline = time.monotonic() + secs
            while len(got) < len(data):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                chunk = self.sock.recv(65536)
                if not chunk:
                    return got or "eof"
                got += chunk
            return got
        except socket.timeout:
            return got or "timeout"
        except OSError as e:
            return type(e).__name__

    def pending(self):
        """What the socket holds now, without waiting (bytes, or an error name)."""
        got = b""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except BlockingIOError:
            pass
        except OSError as e:
            got = type(e).__name__.encode()
        self.sock.setblocking(True)
        return got

    def segment(self, flags, seq, ack, payload=b"", ts=True, tsval=None, window=None):
        opts = []
        if ts:
            opts = [("NOP", None), ("NOP", None),
                    ("Timestamp", ((self.cli_ts if tsval is None else tsval) & 0xFFFFFFFF,
                                   self.srv_ts))]
        win = window if window is not None else 502
        pkt = IP(src=self.t.my_ip, dst=self.t.ip) / TCP(
            sport=self.port, dport=self.t.port, flags=flags, seq=seq & 0xFFFFFFFF,
            ack=ack & 0xFFFFFFFF, window=win, options=opts)
        if payload:
            pkt = pkt / Raw(payload)
        return pkt

    def inject(self, pkt):
        """Sends one crafted frame; returns the flags of the target's first answer
        and whether any answer echoed EVIL (the server took the injected bytes:
        the client's kernel itself drops that echo, as it acknowledges bytes it
        never sent)."""
        self.wire.send(pkt)
        replies = self.track(REPLY_WAIT)
        echoed = any(EVIL in bytes(p[TCP].payload) for p in replies)
        return (str(replies[0][TCP].flags) if replies else None), echoed


# ---- scenarios on an established connection -------------------------------------

def established(t, build, payload_check=False, after_echo=b"after"):
    c = Conn(t)
    try:
        reply, echoed = c.inject(build(c))
        result = {"reply": reply}
        if payload_check:
            result["delivered"] = echoed or EVIL in c.pending()
        got = c.echo(after_echo)
        result["alive"] = got == after_echo
        return result
    finally:
        c.close()


def rcv(c, off=0):
    return c.cli_nxt + off  # the target's RCV.NXT: what the client sent so far


def snd(c, off=0):
    return c.srv_nxt + off  # the target's SND.NXT


ESTABLISHED = {
    # RFC 5961 3: RST out of the window: dropped; in it but not at RCV.NXT: a
    # challenge ACK; exactly at RCV.NXT: the connection is reset.
    "rst_out_of_window": (lambda c: c.segment("R", rcv(c, SEQ_FAR), 0, ts=False),
                          {"alive": True}),
    "rst_in_window": (lambda c: c.segment("R", rcv(c, 1), 0, ts=False),
                      {"alive": True, "reply": "A"}),
    "rst_exact": (lambda c: c.segment("R", rcv(c), 0, ts=False), {"alive": False}),
    "rst_ack_exact": (lambda c: c.segment("RA", rcv(c), snd(c), ts=False), {"alive": False}),
    # RFC 5961 4: a SYN on a synchronized connection, in or out of the window:
    # an ACK back, no reset.
    "syn_in_window": (lambda c: c.segment("S", rcv(c, 1), 0, ts=False),
                      {"alive": True, "reply": "A"}),
    "syn_out_of_window": (lambda c: c.segment("S", rcv(c, SEQ_FAR), 0, ts=False),
                          {"alive": True, "reply": "A"}),
    # RFC 5961 5 and RFC 9293 3.10.7.4: data the receiver must not take.
    "data_out_of_window": (lambda c: c.segment("PA", rcv(c, SEQ_FAR), snd(c), EVIL),
                           {"alive": True, "delivered": False}),
    "data_ack_unsent": (lambda c: c.segment("PA", rcv(c), snd(c, 1 << 20), EVIL),
                        {"alive": True, "delivered": False}),
    "data_ack_too_old": (lambda c: c.segment("PA", rcv(c), snd(c, -SEQ_FAR), EVIL),
                         {"alive": True, "delivered": False}),
    "data_no_ack_flag": (lambda c: c.segment("P", rcv(c), 0, EVIL),
                         {"alive": True, "delivered": False}),
    # RFC 7323 5: a timestamp older than TS.Recent (PAWS): dropped, ACKed.
    "data_paws_old_timestamp": (lambda c: c.segment("PA", rcv(c), snd(c), EVIL,
                                                    tsval=c.cli_ts - SEQ_FAR),
                                {"alive": True, "delivered": False, "reply": "A"}),
    # In the window but after a hole: kept out of order, not delivered.
    "data_after_hole": (lambda c: c.segment("PA", rcv(c, 1000), snd(c), EVIL),
                        {"alive": True, "delivered": False, "reply": "A"}),
    # The control: the right numbers are taken, so the ones above were near misses.
    # (The connection is broken afterwards: the target now acknowledges bytes the
    # client never sent, which the client's kernel drops.)
    "data_exact_control": (lambda c: c.segment("PA", rcv(c), snd(c), EVIL),
                           {"delivered": True}),
    # A FIN outside the window changes nothing.
    "fin_out_of_window": (lambda c: c.segment("FA", rcv(c, SEQ_FAR), snd(c)),
                          {"alive": True}),
}


def icmp_about(c, code, seq, mtu=0):
    """An ICMP destination-unreachable quoting a segment the target sent us."""
    quoted = IP(src=c.t.ip, dst=c.t.my_ip, proto=6, ttl=64) / TCP(
        sport=c.t.port, dport=c.port, seq=seq & 0xFFFFFFFF, flags="A")
    icmp = ICMP(type=3, code=code)
    if code == 4:
        icmp.nexthopmtu = mtu
    return IP(src=c.t.my_ip, dst=c.t.ip) / icmp / bytes(quoted)[:28]


def segment_size(c):
    """After the frame, the largest segment the target sends back for 8 KiB."""
    c.max_segment = 0
    got = c.echo(b"x" * 8192)
    c.track(0.3, idle=0.1)
    if got != b"x" * 8192:
        return "broken"
    return "full" if c.max_segment > 1000 else "reduced"


def icmp_scenario(code, seq_of, mtu=0):
    def run(t):
        c = Conn(t)
        try:
            c.wire.send(icmp_about(c, code, seq_of(c), mtu))
            c.track(REPLY_WAIT, idle=0.2)
            result = {"segments": segment_size(c)} if code == 4 else {}
            result["alive"] = c.echo(b"after") == b"after"
            return result
        finally:
            c.close()
    return run


ICMP_ERRORS = {
    # RFC 5927 4.1: an ICMP error quoting a sequence number the target never sent
    # in this connection changes nothing.
    "icmp_frag_needed_bogus_seq": (icmp_scenario(4, lambda c: snd(c, SEQ_FAR), mtu=576),
                                   {"alive": True, "segments": "full"}),
    "icmp_port_unreachable_bogus_seq": (icmp_scenario(3, lambda c: snd(c, SEQ_FAR)),
                                        {"alive": True}),
    # RFC 1122 4.2.3.9 / RFC 5461: on a synchronized connection these are soft,
    # even quoting SND.UNA (nothing is in flight between the echoes).
    "icmp_port_unreachable_at_una": (icmp_scenario(3, lambda c: snd(c)), {"alive": True}),
    "icmp_host_unreachable_at_una": (icmp_scenario(1, lambda c: snd(c)), {"alive": True}),
    "icmp_protocol_unreachable_at_una": (icmp_scenario(2, lambda c: snd(c)), {"alive": True}),
    # Last: Linux keeps a path MTU it learns for the destination, not the connection.
    "icmp_frag_needed_at_una": (icmp_scenario(4, lambda c: snd(c), mtu=576),
                                {"alive": True}),
}


# ---- scenarios without a connection: the listener and malformed headers ---------

def fresh_port():
    return random.randint(20000, 29999)  # below Linux's ephemeral range


def syn(t, sport=None, **tcp):
    fields = dict(sport=sport or fresh_port(), dport=t.port, flags="S",
                  seq=random.getrandbits(32), window=64240,
                  options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
    fields.update(tcp)
    return IP(src=t.my_ip, dst=t.ip) / TCP(**fields)


def raw_bytes(pkt, edit):
    """The frame's IP bytes, changed by edit(bytearray) after checksums were set."""
    b = bytearray(bytes(pkt))
    edit(b)
    return Raw(bytes(b))


def set_byte(i, v):
    def edit(b):
        b[i] = v
    return edit


def ip_total_length(n):
    def edit(b):
        b[2:4] = struct.pack("!H", n)
        set_ip_checksum(b)
    return edit


def set_ip_checksum(b):
    """Recomputes the checksum of the 20-byte IPv4 header at the start of b."""
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", ipsum(b[:20]))


def ipsum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), bytes(b)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def stateless(build, match_port=True):
    """Sends one frame from a fresh port; the flags of the first TCP answer to it."""
    def run(t):
        sport = fresh_port()
        w = Wire(t)
        try:
            w.send(build(t, sport))
            for outgoing, p in w.frames(REPLY_WAIT):
                if outgoing or IP not in p or p[IP].src != t.ip or TCP not in p:
                    continue
                if match_port and p[TCP].dport != sport:
                    continue
                return {"reply": str(p[TCP].flags)}
            return {"reply": None}
        finally:
            w.close()
    return run


def opt_bytes(raw):
    """SYN with these raw option bytes (padded to 4) and MSS 1460 before them."""
    def build(t, sport):
        opts = b"\x02\x04\x05\xb4" + raw
        opts += b"\x00" * (-len(opts) % 4)
        return syn(t, sport, options=[], dataofs=5 + len(opts) // 4) / Raw(opts)
    return build


LISTENER = {
    "syn_control": (stateless(lambda t, s: syn(t, s)), {"reply": "SA"}),
    "syn_to_closed_port": (stateless(lambda t, s: syn(t, s, dport=t.port + 1)), {"reply": "RA"}),
    "syn_bad_tcp_checksum": (stateless(lambda t, s: syn(t, s, chksum=0x1234)), {"reply": None}),
    "syn_bad_ip_checksum": (stateless(lambda t, s: raw_bytes(syn(t, s), set_byte(10, 0x5a))),
                            {"reply": None}),
    "syn_data_offset_beyond_packet": (stateless(lambda t, s: syn(t, s, options=[], dataofs=15)),
                                      {"reply": None}),
    "syn_data_offset_below_header": (stateless(lambda t, s: syn(t, s, options=[], dataofs=4)),
                                     {"reply": None}),
    "syn_option_length_overruns": (stateless(opt_bytes(b"\x03\x10\x07")), {}),
    "syn_option_length_zero": (stateless(opt_bytes(b"\x08\x00")), {}),
    "syn_window_scale_15": (stateless(lambda t, s: syn(t, s, options=[("MSS", 1460),
                                                                      ("WScale", 15)])),
                            {"reply": "SA"}),
    "syn_mss_zero": (stateless(lambda t, s: syn(t, s, options=[("MSS", 0)])), {"reply": "SA"}),
    "syn_with_data": (stateless(lambda t, s: syn(t, s) / Raw(b"early")), {"reply": "SA"}),
    "syn_fin": (stateless(lambda t, s: syn(t, s, flags="SF")), {"reply": None}),
    "syn_rst": (stateless(lambda t, s: syn(t, s, flags="SR")), {"reply": None}),
    "no_flags": (stateless(lambda t, s: syn(t, s, flags="")), {"reply": None}),
    "fin_without_connection": (stateless(lambda t, s: syn(t, s, flags="F")), {"reply": None}),
    "ack_without_connection": (stateless(lambda t, s: syn(t, s, flags="A", ack=12345)),
                               {"reply": "R"}),
    "ip_total_length_beyond_frame": (stateless(lambda t, s: raw_bytes(syn(t, s),
                                                                      ip_total_length(200))),
                                     {"reply": None}),
    "ip_header_length_4": (stateless(lambda t, s: raw_bytes(syn(t, s), set_byte(0, 0x44))),
                           {"reply": None}),
    # LAND: a SYN from the target's own address and port to itself.
    "land": (stateless(lambda t, s: IP(src=t.ip, dst=t.ip) / TCP(
        sport=t.port, dport=t.port, flags="S", seq=1000), match_port=False), {"reply": None}),
}


# ---- IPv4 fragments (UDP echo, and one TCP SYN) ----------------------------------

def udp_echoed(t, frames, payload, secs=REPLY_WAIT):
    """Sends frames; whether the target echoed payload back (True/False)."""
    w = Wire(t)
    try:
        for f in frames:
            w.send(f)
        for outgoing, p in w.frames(secs):
            if not outgoing and UDP in p and p[IP].src == t.ip and bytes(p[UDP].payload) == payload:
                return True
        return False
    finally:
        w.close()


def datagram(t, payload, ident):
    return IP(src=t.my_ip, dst=t.ip, id=ident) / UDP(sport=fresh_port(), dport=t.port) / payload


def frag_tiny(t):
    payload = bytes(random.getrandbits(8) for _ in range(96))
    return {"echoed": udp_echoed(t, fragment(datagram(t, payload, 0x4101), fragsize=8), payload)}


def frag_overlap(t):
    """Two fragments covering the same 8 bytes with different contents."""
    payload = b"A" * 64
    d = datagram(t, payload, 0x4102)
    frags = fragment(d, fragsize=32)
    liar = frags[1].copy()
    liar.frag = frags[1].frag - 1   # starts 8 bytes into the first fragment
    liar[IP].payload = Raw(b"B" * len(bytes(frags[1][IP].payload)))
    del liar[IP].chksum
    del liar[IP].len
    return {"echoed": udp_echoed(t, [frags[0], liar] + frags[1:], payload)}


def frag_duplicate(t):
    payload = b"D" * 64
    frags = fragment(datagram(t, payload, 0x4103), fragsize=32)
    return {"echoed": udp_echoed(t, [frags[0], frags[0]] + frags[1:], payload)}


def frag_never_completed(t):
    """Thousands of first fragments that never complete; then a whole datagram."""
    w = Wire(t)
    try:
        base = bytes(fragment(datagram(t, b"F" * 64, 1), fragsize=32)[0])
        for ident in range(2, 4002):
            b = bytearray(base)
            b[4:6] = struct.pack("!H", ident)
            set_ip_checksum(b)
            w.s.send(bytes(Ether(src=t.my_mac, dst=t.mac)) + bytes(b))
    finally:
        w.close()
    payload = b"whole"
    return {"echoed_after": udp_echoed(t, [datagram(t, payload, 0x4104)], payload, secs=2.0)}


def frag_tcp_syn(t):
    sport = fresh_port()
    w = Wire(t)
    try:
        for f in fragment(syn(t, sport), fragsize=16):
            w.send(f)
        for outgoing, p in w.frames(REPLY_WAIT):
            if not outgoing and TCP in p and p[IP].src == t.ip and p[TCP].dport == sport:
                return {"reply": str(p[TCP].flags)}
        return {"reply": None}
    finally:
        w.close()


FRAGMENTS = {
    "frag_udp_tiny": (frag_tiny, {"echoed": True}),
    "frag_udp_overlap": (frag_overlap, {"echoed": False}),
    "frag_udp_duplicate": (frag_duplicate, {}),
    "frag_udp_never_completed": (frag_never_completed, {"echoed_after": True}),
    "frag_tcp_syn": (frag_tcp_syn, {}),
}


# ---- SYN flood --------------------------------------------------------------------

def flood(t, count, secs):
    """A child process sends count spoofed SYNs over about secs seconds."""
    pid = os.fork()
    if pid:
        return pid
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((t.iface, 0))
        eth = bytes(Ether(src=t.my_mac, dst=t.mac, type=0x0800))
        dst = socket.inet_aton(t.ip)
        rnd = random.Random(5961)
        start = time.monotonic()
        for i in range(count):
            src = bytes([198, 19, rnd.randrange(256), rnd.randrange(1, 255)])
            sport = rnd.randrange(1024, 65535)
            seq = rnd.getrandbits(32)
            iph = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 44, i & 0xFFFF, 0, 64, 6, 0,
                                        src, dst))
            iph[10:12] = struct.pack("!H", ipsum(iph))
            tcph = bytearray(struct.pack("!HHIIBBHHH", sport, t.port, seq, 0, 0x60, 0x02, 64240,
                                         0, 0) + b"\x02\x04\x05\xb4")
            pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcph))
            tcph[16:18] = struct.pack("!H", ipsum(pseudo + tcph))
            frame = eth + bytes(iph) + bytes(tcph)
            for _ in range(1000):  # the veth's queue full: wait for it to drain
                try:
                    s.send(frame)
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    time.sleep(0.001)
            if i % 256 == 255:
                ahead = start + secs * (i + 1) / count - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001  a child reports and exits
        print("flood: %s" % e, file=sys.stderr)
        os._exit(1)


def syn_flood(t, count, secs):
    pid = flood(t, count, secs)
    ok = tried = 0
    started = time.monotonic()
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() - started > secs + 60:
            break
        tried += 1
        try:
            with socket.create_connection((t.ip, t.port), timeout=5) as s:
                s.settimeout(5)
                s.sendall(b"legit")
                got = b""
                while len(got) < 5:
                    chunk = s.recv(16)
                    if not chunk:
                        break
                    got += chunk
                ok += got == b"legit"
        except OSError:
            pass
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return {"spoofed_syns": count, "legit_tried": tried, "legit_ok": ok,
            "secs": round(time.monotonic() - started, 2)}


# ---- driver -----------------------------------------------------------------------

ALL = {}
for table in (ESTABLISHED, ICMP_ERRORS, LISTENER, FRAGMENTS):
    ALL.update(table)


def run_scenario(t, name):
    action, _ = ALL[name]
    if name in ESTABLISHED:
        payload_check = "delivered" in ALL[name][1]
        return established(t, action, payload_check=payload_check)
    return action(t)


def cmd_run(a):
    random.seed(a.seed)
    t = Target(a.iface, a.target, a.port)
    Conn(t).close()  # learns the target's MAC
    names = a.only.split(",") if a.only else list(ALL)
    out = {"target": a.target, "scenarios": {}, "expect": {}}
    for name in names:
        try:
            out["scenarios"][name] = run_scenario(t, name)
        except Exception as e:  # noqa: BLE001  a scenario that breaks is a result
            out["scenarios"][name] = {"error": "%s: %s" % (type(e).__name__, e)}
        out["expect"][name] = ALL[name][1]
        print("%-36s %s" % (name, json.dumps(out["scenarios"][name])), flush=True)
    if a.flood:
        out["flood"] = syn_flood(t, a.flood, a.flood_secs)
        print("%-36s %s" % ("syn_flood", json.dumps(out["flood"])), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def cmd_compare(a):
    linux = json.load(open(a.linux))
    shunt = json.load(open(a.shunt))
    allow = {}
    for line in open(a.allow):
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, why = line.partition(":")
            allow[name.strip()] = why.strip()
    failures = 0
    for name, got in shunt["scenarios"].items():
        want = shunt["expect"].get(name, {})
        lin = linux["scenarios"].get(name)
        broken = [k for k, v in want.items() if got.get(k) != v]
        if "error" in got or broken:
            failures += 1
            print("FAIL %s: shunt %s, required %s" % (name, json.dumps(got), json.dumps(want)))
            continue
        if got == lin:
            print("same %s: %s" % (name, json.dumps(got)))
        elif name in allow:
            print("allowed %s: shunt %s, Linux %s (%s)" % (name, json.dumps(got), json.dumps(lin),
                                                          allow[name]))
        else:
            failures += 1
            print("FAIL %s: shunt %s, Linux %s, not in %s" % (name, json.dumps(got),
                                                             json.dumps(lin), a.allow))
    for name, why in allow.items():
        if name in shunt["scenarios"] and shunt["scenarios"][name] == linux["scenarios"].get(name):
            print("note %s: allowed to differ (%s) but now the same as Linux" % (name, why))
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--iface", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--only")
    r.add_argument("--seed", type=int, default=5961)
    r.add_argument("--flood", type=int, default=0)
    r.add_argument("--flood-secs", type=float, default=5.0)
    c = sub.add_parser("compare")
    c.add_argument("linux")
    c.add_argument("shunt")
    c.add_argument("allow")
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_compare(a)


if __name__ == "__main__":
    sys.exit(main())
