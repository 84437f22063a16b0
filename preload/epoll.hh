// epoll and poll over sets that mix kernel fds and shunted sockets.
//
// The application's epoll fd stays a real kernel epoll holding its kernel fds.
// Shunted sockets are kept in a per-epfd interest list here (never their
// placeholder in the kernel epoll, except the kernel half of a dual wildcard
// listener, registered with a tag so its events merge with the shunt half).
// epoll_wait scans the interest list (readiness from the slot; edge-triggered
// entries fire when event_seq moved), harvests kernel events with timeout 0, and
// when nothing is ready sleeps on a private epoll holding the application's epfd
// and the app doorbell.
//
// An epoll fd inside another (or in poll/select) is one of ours when it has members
// of ours: its readiness adds theirs to the kernel's.
//
// A socket whose routing is not decided yet is registered in the kernel epoll (it
// is a plain kernel socket until then) and remembered here; the decision moves it.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>

#include "socket.hh"

namespace shunt::preload {

// epoll_ctl where fd is a socket of ours (any mode but kKernel).
int ep_ctl(Socket& s, int epfd, int op, int fd, epoll_event* ev);
// epoll_ctl where fd is an epoll fd (one of ours: a nested epoll is readable while
// one of its members of ours is ready, besides what the kernel reports of it).
int ep_ctl_nested(int epfd, int op, int fd, epoll_event* ev);
// A new epoll fd: tracked from the start, so that nesting it is followed.
void ep_created(int epfd);
// epoll_wait/epoll_pwait. Falls through to libc when epfd has no shunted interest.
int ep_wait(int epfd, epoll_event* evs, int max, int timeout_ms, const sigset_t* sigmask,
            bool pwait);
// epoll_pwait2: a timespec timeout (nullptr: forever).
int ep_wait2(int epfd, epoll_event* evs, int max, const timespec* ts, const sigset_t* sigmask);
// Whether epfd is an epoll fd with members of ours: else epoll_wait on it is the
// kernel's alone (asked first by the wrappers, before anything else).
bool epoll_of_ours(int epfd);
// Whether poll over fds must go through poll_mixed: one of them is a shunted
// socket or an epoll fd with members of ours. Asked before anything else (a
// deadline's clock read), so that a kernel-only set costs only the table lookups.
bool polls_ours(pollfd* fds, nfds_t n);
// poll/ppoll. *handled false: no shunted fd in the set, the caller uses libc.
int poll_mixed(pollfd* fds, nfds_t n, const Deadline& d, const sigset_t* sigmask, bool* handled);
// select/pselect over poll_mixed (Linux's POLLIN_SET/POLLOUT_SET/POLLEX_SET
// mapping). *handled false: no shunted fd in the sets, the caller uses libc.
int select_mixed(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const Deadline& d,
                 const sigset_t* sigmask, bool* handled);

// Routing decided for a socket registered before the decision (s.mu held).
void epolls_on_decision(Socket& s, int fd);
// A dual (wildcard UDP) socket kept one half (its mode is now kShunted or kKernel):
// the kernel half's tagged registration goes, or becomes the plain one. s.mu held.
void epolls_dual_end(Socket& s, int fd);
// The socket is gone: drop every interest naming it.
void epolls_forget(Socket& s);
// An fd of ours is being closed/replaced: an epoll object there goes away.
void epolls_fork_prepare();
void epolls_fork_parent();
void epolls_fork_child();

}  // namespace shunt::preload
