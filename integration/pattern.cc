// Seeded, position-checked byte streams for integration/integrity_test.sh.
//
//   shunt_pattern file SEED BYTES           the stream SEED, BYTES long, on stdout
//   shunt_pattern check SEED BYTES          stdin must be exactly that stream
//   shunt_pattern echo ADDR PORT CONNS BYTES SEED SECS
//       CONNS connections to an echo server; connection i sends stream SEED+i,
//       BYTES long, then shuts its write side, and must read back exactly those
//       bytes and then EOF, all within SECS seconds.
//
// Every 8-byte word of a stream is a hash of (stream, word index), so a byte out
// of place, from another connection, repeated or lost shows up at its offset,
// which is what a failure names. Exit 0 when every byte matched; 1 otherwise.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr size_t kChunk = 256 * 1024;

uint64_t mix(uint64_t z) {  // the splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The stream's bytes [off, off + n) into buf (little-endian words).
void fill(uint64_t stream, uint64_t off, uint8_t* buf, size_t n) {
  const uint64_t salt = mix(stream + 0x9e3779b97f4a7c15ull);
  size_t i = 0;
  for (; i < n && (off + i) % 8 != 0; ++i)  // up to the first whole word
    buf[i] = uint8_t(mix(salt ^ ((off + i) / 8)) >> (8 * ((off + i) % 8)));
  for (; i + 8 <= n; i += 8) {
    const uint64_t word = mix(salt ^ ((off + i) / 8));
    std::memcpy(buf + i, &word, 8);
  }
  for (; i < n; ++i) buf[i] = uint8_t(mix(salt ^ ((off + i) / 8)) >> (8 * ((off + i) % 8)));
}

// Offset of the first byte of got that is not the stream's, or -1.
int64_t first_mismatch(uint64_t stream, uint64_t off, const uint8_t* got, size_t n,
                       uint8_t* scratch) {
  fill(stream, off, scratch, n);
  if (std::memcmp(got, scratch, n) == 0) return -1;
  for (size_t i = 0; i < n; ++i)
    if (got[i] != scratch[i]) return int64_t(off + i);
  return -1;
}

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

uint64_t number(const char* s, const char* what) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') {
    std::fprintf(stderr, "shunt_pattern: %s: not a number: %s\n", what, s);
    std::exit(2);
  }
  return v;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

int cmd_file(uint64_t seed, uint64_t bytes) {
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < bytes;) {
    size_t n = size_t(std::min<uint64_t>(kChunk, bytes - off));
    fill(seed, off, buf.data(), n);
    if (!write_all(1, buf.data(), n)) {
      std::perror("shunt_pattern: write");
      return 1;
    }
    off += n;
  }
  return 0;
}

int cmd_check(uint64_t seed, uint64_t bytes) {
  std::vector<uint8_t> buf(kChunk), scratch(kChunk);
  uint64_t off = 0;
  for (;;) {
    ssize_t n = read(0, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::perror("shunt_pattern: read");
      return 1;
    }
    if (n == 0) break;
    size_t in_stream = size_t(std::min<uint64_t>(uint64_t(n), bytes > off ? bytes - off : 0));
    int64_t bad = first_mismatch(seed, off, buf.data(), in_stream, scratch.data());
    if (bad >= 0) {
      std::fprintf(stderr, "shunt_pattern: stream %llu: wrong byte at offset %lld\n",
                   (unsigned long long)seed, (long long)bad);
      return 1;
    }
    off += uint64_t(n);
  }
  if (off != bytes) {
    std::fprintf(stderr, "shunt_pattern: stream %llu: %llu bytes, want %llu\n",
                 (unsigned long long)seed, (unsigned long long)off, (unsigned long long)bytes);
    return 1;
  }
  return 0;
}

struct Conn {
  int fd = -1;
  uint64_t stream = 0;
  uint64_t sent = 0;
  uint64_t received = 0;
  bool write_shut = false;
  bool eof = false;
  const char* error = nullptr;
  int err = 0;
  int64_t bad_at = -1;
  double done_at = 0;
};

int cmd_echo(const char* addr, uint64_t port, uint64_t conns, uint64_t bytes, uint64_t seed,
             uint64_t secs) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
    std::fprintf(stderr, "shunt_pattern: not an IPv4 address: %s\n", addr);
    return 2;
  }
  std::vector<Conn> cs(conns);
  const double start = now_s(), deadline = start + double(secs);
  for (uint64_t i = 0; i < conns; ++i) {
    Conn& c = cs[i];
    c.stream = seed + i;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c.fd < 0 || (connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 &&
                     errno != EINPROGRESS)) {
      c.error = "connect";
      c.err = errno;
    }
  }
  std::vector<uint8_t> out(kChunk), in(kChunk), scratch(kChunk);
  std::vector<pollfd> pfds(conns);
  for (;;) {
    size_t live = 0;
    for (uint64_t i = 0; i < conns; ++i) {
      Conn& c = cs[i];
      pfds[i] = {-1, 0, 0};
      if (c.error != nullptr || c.eof) continue;
      pfds[i].fd = c.fd;
      pfds[i].events = short(POLLIN | (c.write_shut ? 0 : POLLOUT));
      ++live;
    }
    if (live == 0) break;
    const double left = deadline - now_s();
    if (left <= 0) break;
    int n = poll(pfds.data(), nfds_t(conns), int(left * 1000) + 1);
    if (n < 0 && errno != EINTR) {
      std::perror("shunt_pattern: poll");
      return 1;
    }
    for (uint64_t i = 0; i < conns && n > 0; ++i) {
      Conn& c = cs[i];
      if (pfds[i].fd < 0 || pfds[i].revents == 0) continue;
      if ((pfds[i].revents & POLLOUT) && !c.write_shut) {
        size_t len = size_t(std::min<uint64_t>(kChunk, bytes - c.sent));
        fill(c.stream, c.sent, out.data(), len);
        ssize_t w = len == 0 ? 0 : send(c.fd, out.data(), len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          c.error = "send";
          c.err = errno;
          continue;
        }
        if (w > 0) c.sent += uint64_t(w);
        if (c.sent == bytes) {
          shutdown(c.fd, SHUT_WR);
          c.write_shut = true;
        }
      }
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(c.fd, in.data(), in.size(), 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r < 0) {
          c.error = "recv";
          c.err = errno;
          continue;
        }
        if (r == 0) {
          c.eof = true;
          c.done_at = now_s();
          continue;
        }
        size_t in_stream = size_t(std::min<uint64_t>(uint64_t(r), bytes - std::min(bytes, c.received)));
        int64_t bad = first_mismatch(c.stream, c.received, in.data(), in_stream, scratch.data());
        c.received += uint64_t(r);
        if (bad >= 0 || c.received > bytes) {
          c.bad_at = bad >= 0 ? bad : int64_t(bytes);
          c.error = bad >= 0 ? "wrong byte" : "more bytes than sent";
        }
      }
    }
  }
  const double took = now_s() - start;
  int failed = 0;
  uint64_t moved = 0;
  for (uint64_t i = 0; i < conns; ++i) {
    Conn& c = cs[i];
    moved += c.received;
    const char* why = c.error;
    if (why == nullptr && !c.eof) why = "timed out";
    if (why == nullptr && c.received != bytes) why = "EOF early";
    if (why != nullptr) {
      ++failed;
      std::fprintf(stderr,
                   "shunt_pattern: connection %llu: %s%s%s (sent %llu, received %llu of %llu"
                   "%s%lld)\n",
                   (unsigned long long)i, why, c.err ? ": " : "", c.err ? std::strerror(c.err) : "",
                   (unsigned long long)c.sent, (unsigned long long)c.received,
                   (unsigned long long)bytes, c.bad_at >= 0 ? ", at offset " : "",
                   c.bad_at >= 0 ? (long long)c.bad_at : 0LL);
    }
    if (c.fd >= 0) close(c.fd);
  }
  std::printf("echo: %llu connections, %llu of %llu bytes back, %d failed, %.2f s\n",
              (unsigned long long)conns, (unsigned long long)moved,
              (unsigned long long)(conns * bytes), failed, took);
  return failed == 0 ? 0 : 1;
}

int usage() {
  std::fprintf(stderr,
               "usage: shunt_pattern file SEED BYTES | check SEED BYTES |"
               " echo ADDR PORT CONNS BYTES SEED SECS\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const char* cmd = argv[1];
  if (std::strcmp(cmd, "file") == 0 && argc == 4)
    return cmd_file(number(argv[2], "SEED"), number(argv[3], "BYTES"));
  if (std::strcmp(cmd, "check") == 0 && argc == 4)
    return cmd_check(number(argv[2], "SEED"), number(argv[3], "BYTES"));
  if (std::strcmp(cmd, "echo") == 0 && argc == 8)
    return cmd_echo(argv[2], number(argv[3], "PORT"), number(argv[4], "CONNS"),
                    number(argv[5], "BYTES"), number(argv[6], "SEED"), number(argv[7], "SECS"));
  return usage();
}
