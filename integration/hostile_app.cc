// A program that attacks its own shared-memory region (integration/hostile_region_test.sh).
//
//   shunt run -- shunt_hostile_app ATTACK NIC_IP KERNEL_IP [POKE_SECONDS [SEED]]
//
// Run under libshunt.so: a TCP socket bound to NIC_IP is shunted, so the library
// attaches and maps its region (a memfd named "shunt-region"). The program finds
// that mapping in /proc/self/maps and breaks it, as ATTACK says:
//   header    random bytes over the first 4096 bytes
//   all       random bytes page by page over every page the daemon reads: the
//             header, queues and slots, and of each slot's rings the first
//             256 KiB, the size they start at (the whole region when the header
//             makes no sense; a region reserves 4 MiB per ring, gigabytes in all)
//   queues    random bytes over the queue area right after the 256-byte header
//   truncate  ftruncate of the memfd (via /proc/self/map_files) to 0 and to a
//             larger size, both of which must fail with EPERM (sealed), then a
//             fallocate(PUNCH_HOLE) over the whole file, which zeroes it
// (queues: 16 * sizeof(QueuePair) = 16 * (2 * 128 + 2 * 256 * 64) bytes, taken from
// the header when it says more than 16 * (256 * 128 + 128)), then keeps making socket
// calls (bind, listen, connect to KERNEL_IP:9) for POKE_SECONDS (default 3, at most
// 10) and exits 0, also when a call hangs: an alarm ends the program 0.5 s after the
// poking should have ended. Its own library state is garbage by then: it may crash
// or hang (the test bounds it); what matters is the daemon and the other applications.
//
// Exit status: 0 attack made; 2 usage; 3 no shunted socket or no region found (the
// attack could not be made); 4 truncate: a seal did not hold (the memfd changed size).
// libc only.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

namespace {

// The region's header as far as this program reads it (include/shunt/abi.h).
constexpr uint64_t kHeaderSize = 256;
constexpr uint64_t kQueueAreaGuess = 16ull * (256 * 128 + 128);  // a floor; the header's figure wins
constexpr uint64_t kInitialRing = 256 * 1024;  // shuntd's default first ring size

uint64_t g_rng = 0x9e3779b97f4a7c15ull;
uint64_t next_random() {  // xorshift64*: fast enough for a 2 GiB region
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545f4914f6cdd1dull;
}

void scribble(unsigned char* p, uint64_t len) {
  uint64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v = next_random();
    memcpy(p + i, &v, 8);
  }
  for (; i < len; ++i) p[i] = static_cast<unsigned char>(next_random());
}

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

sockaddr_in sin_of(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

void on_alarm(int) {
  static const char msg[] = "hostile_app: a socket call hung after the attack; giving up\n";
  ssize_t n = write(2, msg, sizeof msg - 1);
  (void)n;
  _exit(0);
}

bool find_region(uintptr_t* start, uintptr_t* end) {
  FILE* f = fopen("/proc/self/maps", "r");
  if (f == nullptr) return false;
  char line[512];
  bool found = false;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strstr(line, "memfd:shunt-region") == nullptr) continue;
    unsigned long s = 0, e = 0;
    if (sscanf(line, "%lx-%lx", &s, &e) == 2) {
      *start = s;
      *end = e;
      found = true;
      break;
    }
  }
  fclose(f);
  return found;
}

// ftruncate must fail with EPERM (F_SEAL_SHRINK / F_SEAL_GROW); then punch a hole.
int attack_truncate(uintptr_t start, uintptr_t end) {
  char path[128];
  snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)start,
           (unsigned long)end);
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    fprintf(stderr, "hostile_app: open %s: %s\n", path, strerror(errno));
    return 3;
  }
  struct stat st{};
  fstat(fd, &st);
  off_t size = st.st_size;
  int rc = 0;
  int r = ftruncate(fd, 0);
  int e = errno;
  printf("hostile_app: ftruncate(0): %s\n", r == 0 ? "succeeded" : strerror(e));
  if (r == 0 || e != EPERM) rc = 4;
  r = ftruncate(fd, size + (1 << 20));
  e = errno;
  printf("hostile_app: ftruncate(%lld): %s\n", (long long)(size + (1 << 20)),
         r == 0 ? "succeeded" : strerror(e));
  if (r == 0 || e != EPERM) rc = 4;
  fstat(fd, &st);
  if (st.st_size != size) {
    printf("hostile_app: the memfd's size changed: %lld -> %lld\n", (long long)size,
           (long long)st.st_size);
    rc = 4;
  }
  r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size);
  e = errno;
  printf("hostile_app: fallocate(PUNCH_HOLE, 0, %lld): %s\n", (long long)size,
         r == 0 ? "succeeded (region zeroed)" : strerror(e));
  close(fd);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s header|all|queues|truncate NIC_IP KERNEL_IP [POKE_SECONDS [SEED]]\n",
            argv[0]);
    return 2;
  }
  const char* attack = argv[1];
  const char* nic_ip = argv[2];
  const char* kernel_ip = argv[3];
  double poke = argc > 4 ? atof(argv[4]) : 3.0;
  if (!(poke >= 0.0 && poke <= 10.0)) {
    fprintf(stderr, "hostile_app: POKE_SECONDS '%s': expected 0 to 10\n", argv[4]);
    return 2;
  }
  g_rng ^= argc > 5 ? strtoull(argv[5], nullptr, 10) * 0x100000001b3ull
                    : uint64_t(getpid()) * 0x100000001b3ull ^ uint64_t(time(nullptr));
  if (g_rng == 0) g_rng = 1;
  if (strcmp(attack, "header") != 0 && strcmp(attack, "all") != 0 &&
      strcmp(attack, "queues") != 0 && strcmp(attack, "truncate") != 0) {
    fprintf(stderr, "hostile_app: unknown attack '%s'\n", attack);
    return 2;
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);

  // A shunted socket: the library attaches and maps the region.
  double started = now_s();
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = sin_of(nic_ip, 0);
  if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    fprintf(stderr, "hostile_app: socket/bind %s: %s\n", nic_ip, strerror(errno));
    return 3;
  }
  uintptr_t start = 0, end = 0;
  if (!find_region(&start, &end)) {
    fprintf(stderr, "hostile_app: no memfd:shunt-region mapping (not shunted?)\n");
    return 3;
  }
  auto* base = reinterpret_cast<unsigned char*>(start);
  uint64_t size = end - start;
  uint64_t queues_offset = 0, slots_offset = 0;
  uint32_t magic = 0, qpairs = 0;
  memcpy(&magic, base, 4);
  memcpy(&qpairs, base + 20, 4);         // RegionHeader::queue_pair_count
  memcpy(&queues_offset, base + 48, 8);  // RegionHeader::queues_offset
  memcpy(&slots_offset, base + 56, 8);   // RegionHeader::slots_offset
  printf("hostile_app: pid %d attached in %.3f s: region %lx-%lx (%llu bytes, magic %08x, %u "
         "queue pairs, queues at %llu, slots at %llu)\n",
         int(getpid()), now_s() - started, (unsigned long)start, (unsigned long)end,
         (unsigned long long)size, magic, qpairs, (unsigned long long)queues_offset,
         (unsigned long long)slots_offset);
  // The test counts from this line: the region is written from here on.
  printf("hostile_app: attack %s starts\n", attack);

  int rc = 0;
  double t0 = now_s();
  if (strcmp(attack, "header") == 0) {
    scribble(base, size < 4096 ? size : 4096);
  } else if (strcmp(attack, "all") == 0) {
    // Every page, the header first. The region is large (gigabytes, mostly never
    // touched): fault the rest in at once, then fill each page from a pool of random
    // pages with a fresh random word in each 64 bytes, so no two pages are alike.
    uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
    // The layout, read before the first byte is written.
    uint64_t rings_offset = 0;
    uint32_t slots = 0, rx_size = 0, tx_size = 0;
    memcpy(&slots, base + 24, 4);          // RegionHeader::slot_count
    memcpy(&rx_size, base + 28, 4);        // rx_ring_size
    memcpy(&tx_size, base + 32, 4);        // tx_ring_size
    memcpy(&rings_offset, base + 64, 8);   // rings_offset
    uint64_t stride = uint64_t(rx_size) + tx_size;
    bool sane = rings_offset > 0 && rings_offset <= size && stride > 0 &&
                rings_offset + uint64_t(slots) * stride <= size;
    static unsigned char pool[64 * 4096];
    scribble(pool, sizeof pool);
    // Every page of [from, to), each unlike the others.
    auto pages = [&](uint64_t from, uint64_t to) {
      if (to > size) to = size;
      if (from >= to) return;
      madvise(base + from, to - from, 23 /* MADV_POPULATE_WRITE */);
      for (uint64_t off = from; off < to; off += page) {
        uint64_t len = to - off < page ? to - off : page;
        uint64_t r = next_random();
        memcpy(base + off, pool + (r % 64) * 4096, len < 4096 ? len : 4096);
        if (len > 4096) scribble(base + off + 4096, len - 4096);  // pages above 4 KiB
        for (uint64_t w = (r >> 8) % 8 * 8; w + 8 <= len; w += 64) {
          uint64_t v = next_random();
          memcpy(base + off + w, &v, 8);
        }
      }
    };
    scribble(base, size < page ? size : page);  // the header first
    if (!sane) {
      pages(page, size);
    } else {
      pages(page, rings_offset);
      uint64_t rx_len = rx_size < kInitialRing ? rx_size : kInitialRing;
      uint64_t tx_len = tx_size < kInitialRing ? tx_size : kInitialRing;
      for (uint32_t i = 0; i < slots; ++i) {
        uint64_t at = rings_offset + uint64_t(i) * stride;
        pages(at, at + rx_len);
        pages(at + rx_size, at + rx_size + tx_len);
      }
      printf("hostile_app: wrote %llu of %llu bytes (%u slots' first rings)\n",
             (unsigned long long)(rings_offset + uint64_t(slots) * (rx_len + tx_len)),
             (unsigned long long)size, slots);
    }
  } else if (strcmp(attack, "queues") == 0) {
    // The queue area: the floor above, or the header's own figure if larger.
    uint64_t len = kQueueAreaGuess;
    if (queues_offset == kHeaderSize && slots_offset > kHeaderSize &&
        slots_offset - kHeaderSize > len)
      len = slots_offset - kHeaderSize;
    if (kHeaderSize + len > size) len = size - kHeaderSize;
    scribble(base + kHeaderSize, len);
  } else {
    rc = attack_truncate(start, end);
  }
  printf("hostile_app: attack done in %.3f s\n", now_s() - t0);

  // Keep poking the daemon with garbage in the region, POKE_SECONDS. A call may
  // hang (the library's queues are garbage too): the alarm ends the program.
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  itimerval it{};
  double limit = poke + 0.5;
  it.it_value.tv_sec = time_t(limit);
  it.it_value.tv_usec = suseconds_t((limit - double(time_t(limit))) * 1e6);
  setitimer(ITIMER_REAL, &it, nullptr);
  double stop = now_s() + poke;
  int round = 0;
  do {
    int b = socket(AF_INET, SOCK_STREAM, 0);
    int rb = -1, rl = -1, rc2 = -1, eb = 0, el = 0, ec = 0;
    if (b >= 0) {
      sockaddr_in me = sin_of(nic_ip, 0);
      rb = bind(b, reinterpret_cast<sockaddr*>(&me), sizeof me);
      eb = errno;
      rl = listen(b, 4);
      el = errno;
      close(b);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c >= 0) {
      sockaddr_in peer = sin_of(kernel_ip, 9);
      rc2 = connect(c, reinterpret_cast<sockaddr*>(&peer), sizeof peer);
      ec = errno;
      close(c);
    }
    if (round == 0)
      printf("hostile_app: after the attack: bind %s, listen %s, connect %s:9 %s\n",
             rb == 0 ? "ok" : strerror(eb), rl == 0 ? "ok" : strerror(el), kernel_ip,
             rc2 == 0 ? "ok" : strerror(ec));
    ++round;
    usleep(50 * 1000);
  } while (now_s() < stop && round < 200);
  it = itimerval{};
  setitimer(ITIMER_REAL, &it, nullptr);
  printf("hostile_app: %d rounds of socket calls; exit %d\n", round, rc);
  return rc;
}
