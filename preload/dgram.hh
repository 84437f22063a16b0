// AF_INET datagram (UDP) sockets: the calls on a Socket with `datagram` set.
//
// Routing (docs/architecture.md, as for TCP): bind to the NIC's address, or connect/sendto
// a destination the NIC routes, shunts the socket (an unbound socket is bound to
// an ephemeral port first, like Linux's autobind); bind to the wildcard address
// binds the kernel socket and the NIC with the same port (Mode::kDual) and
// receives from both halves, sending through the NIC to NIC destinations and
// through the kernel elsewhere; a connect decides a dual socket for one half.
// Everything else stays a kernel socket.
//
// Data path: one record per datagram in the slot's rings (abi.h "Datagram
// records"); sendto appends a record and notes kTxReady (no round trip), recvfrom
// takes one. No syscall while the rings have data or room.
//
// Every function returns a value >= 0 or -errno.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "socket.hh"

namespace shunt::preload {

int dgram_bind(Socket& s, int fd, const sockaddr* addr, socklen_t len);
int dgram_connect(Socket& s, int fd, const sockaddr* addr, socklen_t len);
int dgram_shutdown(Socket& s, int fd, int how);
int dgram_getpeername(Socket& s, int fd, sockaddr* addr, socklen_t* len);
// The pending ICMP error (ECONNREFUSED …) of a connected socket, reported once.
int dgram_take_error(Socket& s);
int dgram_ioctl(Socket& s, int fd, unsigned long req, void* arg);

// msg_name (when set) receives the source; msg_flags gets MSG_TRUNC when the
// datagram was longer than the buffers. No control messages (msg_controllen 0).
ssize_t dgram_recvmsg(Socket& s, int fd, msghdr* msg, int flags);
ssize_t dgram_sendmsg(Socket& s, int fd, const msghdr* msg, int flags);
ssize_t dgram_recvfrom(Socket& s, int fd, void* buf, size_t len, int flags, sockaddr* addr,
                       socklen_t* alen);
ssize_t dgram_sendto(Socket& s, int fd, const void* buf, size_t len, int flags,
                     const sockaddr* addr, socklen_t alen);

// Ring helpers (pure, unit tested). The caller made sure a record of `len` bytes
// fits (dgram_record_size(len) <= tx.writable()). False, with nothing queued,
// when an iovec is memory the process may not read.
bool dgram_write_iov(abi::ByteRing& tx, uint32_t ip_be, uint16_t port_be, const iovec* iov,
                     int iovcnt, uint32_t len);
// Copies the payload of the record at rx's tail (header h) into the iovecs, up to
// their size; consumes nothing. Returns the bytes copied; an iovec the process may
// not write stops the copy and sets *fault.
size_t dgram_read_iov(const abi::ByteRing& rx, const abi::DgramHeader& h, const iovec* iov,
                      int iovcnt, bool* fault = nullptr);

}  // namespace shunt::preload
