#include "exec.hh"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "fd_table.hh"
#include "libc.hh"
#include "log.hh"
#include "runtime.hh"
#include "socket.hh"

namespace shunt::preload {
namespace {

constexpr char kStateVar[] = "SHUNT_EXEC_FD";
constexpr uint64_t kMagic = 0x6365786574686e73;  // "shntexec"

// The memfd: a Header, then the regions, the sockets, the fds, the slots to close.
struct RegionImage {
  uint32_t id;
  int32_t memfd, app_bell, daemon_bell, ctl_fd;  // ctl_fd: the attachment's region only
  uint64_t size;
};
struct FdImage {
  int32_t fd;
  uint32_t socket;  // index of its SocketImage (dup'ed fds share one)
};
struct Header {
  uint64_t magic;
  uint32_t abi_version;
  uint32_t region_size, socket_size, fd_size;  // record sizes: another libshunt.so build refuses
  uint64_t cookie;
  uint32_t regions, sockets, fds, closes;
};

// The SHUNT_* variables this image started with, so that a program that empties
// its environment before exec (nginx keeps only TZ for its binary upgrade) still
// hands the new image the same daemon. Copied at load, before main runs.
constexpr size_t kKeptBytes = 4096;
constexpr size_t kKeptMax = 32;
char g_kept_buf[kKeptBytes];
char* g_kept[kKeptMax];
size_t g_kept_count = 0;

void keep_shunt_environment() {
  size_t used = 0;
  for (char** e = environ; e != nullptr && *e != nullptr && g_kept_count < kKeptMax; ++e) {
    if (strncmp(*e, "SHUNT_", 6) != 0 || strncmp(*e, kStateVar, sizeof kStateVar - 1) == 0)
      continue;
    size_t n = strlen(*e) + 1;
    if (used + n > kKeptBytes) break;
    memcpy(g_kept_buf + used, *e, n);
    g_kept[g_kept_count++] = g_kept_buf + used;
    used += n;
  }
}

// This library's file, for LD_PRELOAD in the new image (set at load).
const char* g_library_path = nullptr;

void find_library_path() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&find_library_path), &info) != 0) g_library_path = info.dli_fname;
}

bool names_same_variable(const char* a, const char* b) {
  const char* eq = strchr(a, '=');
  size_t n = eq != nullptr ? size_t(eq - a + 1) : strlen(a);
  return strncmp(a, b, n) == 0;
}

// The dynamic loader will run LD_PRELOAD for this file: not a secure exec (setuid,
// setgid, file capabilities) and not a statically linked ELF. Scripts are judged
// by their interpreter, which the exec loads with the same environment.
bool target_loads_preload(const char* path) {
  struct stat st;
  if (path == nullptr || stat(path, &st) != 0) return true;  // the exec will fail as it should
  if ((st.st_mode & (S_ISUID | S_ISGID)) != 0) return false;
  if (getxattr(path, "security.capability", nullptr, 0) > 0) return false;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  Elf64_Ehdr eh;
  bool loads = true;
  ssize_t n = pread(fd, &eh, sizeof eh, 0);
  if (n == ssize_t(sizeof eh) && memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 &&
      eh.e_ident[EI_CLASS] == ELFCLASS64 && eh.e_phentsize == sizeof(Elf64_Phdr)) {
    loads = false;  // no PT_INTERP: static
    for (unsigned i = 0; i < eh.e_phnum && i < 256; ++i) {
      Elf64_Phdr ph;
      if (pread(fd, &ph, sizeof ph, off_t(eh.e_phoff + i * sizeof ph)) != ssize_t(sizeof ph)) break;
      if (ph.p_type == PT_INTERP) {
        loads = true;
        break;
      }
    }
  }
  libc().close(fd);
  return loads;
}

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = libc().write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= size_t(w);
  }
  return true;
}

// ---- the new image ----

void set_cloexec(int fd) {
  if (fd >= 0) libc().fcntl(fd, F_SETFD, FD_CLOEXEC);
}

// Maps a carried region; null (its fds closed) when it does not check out.
Region* map_region(const RegionImage& ri) {
  for (int fd : {ri.memfd, ri.app_bell, ri.daemon_bell, ri.ctl_fd}) set_cloexec(fd);
  struct stat st;
  void* base = MAP_FAILED;
  if (ri.size >= sizeof(abi::RegionHeader) && fstat(ri.memfd, &st) == 0 &&
      uint64_t(st.st_size) >= ri.size)
    base = mmap(nullptr, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, ri.memfd, 0);
  auto* r = base != MAP_FAILED ? new (std::nothrow) Region : nullptr;
  if (r == nullptr || !abi::region_fits(*abi::header(base), ri.size) ||
      abi::header(base)->queue_pair_count == 0) {
    if (base != MAP_FAILED) munmap(base, ri.size);
    delete r;
    for (int fd : {ri.memfd, ri.app_bell, ri.daemon_bell, ri.ctl_fd})
      if (fd >= 0) libc().close(fd);
    return nullptr;
  }
  r->base = base;
  r->size = ri.size;
  r->hdr = abi::header(base);
  r->layout = abi::layout_of(*r->hdr);
  r->memfd = ri.memfd;
  r->app_bell = ri.app_bell;
  r->daemon_bell = ri.daemon_bell;
  r->ctl_fd = ri.ctl_fd;
  r->id = ri.id;
  return r;
}

void resume(const char* buf, size_t len) {
  Header h;
  if (len < sizeof h) return;
  memcpy(&h, buf, sizeof h);
  if (h.magic != kMagic || h.abi_version != abi::kVersion || h.region_size != sizeof(RegionImage) ||
      h.socket_size != sizeof(SocketImage) || h.fd_size != sizeof(FdImage) || h.regions == 0 ||
      h.regions > 1024 || h.sockets > FdTable::kMaxFds || h.fds > FdTable::kMaxFds ||
      h.closes > FdTable::kMaxFds ||
      len != sizeof h + h.regions * sizeof(RegionImage) + h.sockets * sizeof(SocketImage) +
                 h.fds * sizeof(FdImage) + h.closes * sizeof(uint32_t)) {
    log_line(false, "%s: not this libshunt.so's exec state; inherited shunted sockets are lost",
             kStateVar);
    return;
  }
  const char* p = buf + sizeof h;
  std::vector<Region*> regions(h.regions, nullptr);
  for (uint32_t i = 0; i < h.regions; ++i, p += sizeof(RegionImage)) {
    RegionImage ri;
    memcpy(&ri, p, sizeof ri);
    if (i > 0) ri.ctl_fd = -1;  // only the attachment's own region has one
    regions[i] = map_region(ri);
  }
  Region* current = regions[0];
  if (current == nullptr || current->ctl_fd < 0) {
    log_line(false, "%s: the attachment did not survive exec; inherited shunted sockets are lost",
             kStateVar);
    return;
  }
  Runtime& rt = Runtime::get();
  rt.resume_after_exec(current, h.cookie);

  std::vector<SocketImage> images(h.sockets);
  memcpy(images.data(), p, h.sockets * sizeof(SocketImage));
  p += h.sockets * sizeof(SocketImage);
  std::vector<Socket*> built(h.sockets, nullptr);
  uint32_t carried = 0;
  for (uint32_t i = 0; i < h.fds; ++i, p += sizeof(FdImage)) {
    FdImage fi;
    memcpy(&fi, p, sizeof fi);
    if (fi.socket >= h.sockets || !FdTable::in_range(fi.fd) || libc().fcntl(fi.fd, F_GETFD) < 0)
      continue;
    const SocketImage& im = images[fi.socket];
    Region* r = im.region < h.regions ? regions[im.region] : nullptr;
    if (r != nullptr && (im.slot >= r->slot_count() || im.ctl_slot >= current->slot_count()))
      continue;
    if (im.region != SocketImage::kNoRegion && r == nullptr) continue;  // its region is lost
    if (built[fi.socket] == nullptr) {
      built[fi.socket] = sock_from_image(im, r, fi.fd);
      if (built[fi.socket] == nullptr) continue;
      ++carried;
    }
    fd_table().install(fi.fd, built[fi.socket], nullptr);
  }
  for (uint32_t i = 0; i < h.closes; ++i, p += sizeof(uint32_t)) {
    uint32_t slot;
    memcpy(&slot, p, sizeof slot);
    if (slot < current->slot_count()) rt.post(make_command(abi::Op::kClose, slot));
  }
  SHUNT_DEBUG("exec: %u sockets carried over, %u closed with their close-on-exec fds", carried,
              h.closes);
}

// Before main, in every image: keep the environment; adopt what an exec carried.
__attribute__((constructor)) void exec_init() {
  keep_shunt_environment();
  find_library_path();
  const char* v = getenv(kStateVar);
  if (v == nullptr) return;
  char* end = nullptr;
  long fd = strtol(v, &end, 10);
  unsetenv(kStateVar);  // for this image's own children
  struct stat st;
  if (end == v || *end != '\0' || fd < 0 || fd > INT32_MAX || fstat(int(fd), &st) != 0 ||
      st.st_size <= 0 || st.st_size > (int64_t(64) << 20)) {
    log_line(false, "%s=%s does not name the exec state; inherited shunted sockets are lost",
             kStateVar, v);
    return;
  }
  std::vector<char> buf(size_t(st.st_size));
  ssize_t n = pread(int(fd), buf.data(), buf.size(), 0);
  libc().close(int(fd));
  if (n == ssize_t(buf.size())) resume(buf.data(), buf.size());
}

}  // namespace

ExecCarry::~ExecCarry() {
  for (char* s : owned_) free(s);
}

bool ExecCarry::prepare(const char* target, char* const envp[]) {
  Runtime& rt = Runtime::get();
  Region* current = rt.region();
  if (!rt.attached() || current == nullptr || current->gone.load() || current->ctl_fd < 0 ||
      current->memfd < 0)
    return false;

  // Every socket of ours with its fds: which survive the exec.
  struct Entry {
    Socket* s;
    int fd;
    bool survives;
  };
  std::vector<Entry> entries;
  fd_table().for_each([&](int fd, FdObject* o) {
    if (o->kind != FdKind::kSocket) return;
    auto* s = static_cast<Socket*>(o);
    if (!s->ours() || s->dead.load()) return;
    int flags = libc().fcntl(fd, F_GETFD);
    entries.push_back({s, fd, flags >= 0 && (flags & FD_CLOEXEC) == 0});
  });
  if (std::none_of(entries.begin(), entries.end(), [](const Entry& e) { return e.survives; }))
    return false;  // the control socket closes with the exec: shuntd closes them all
  if (!target_loads_preload(target)) {
    SHUNT_WARN("exec %s: it will not load libshunt.so (setuid, capabilities or static): "
               "its inherited shunted sockets are closed", target);
    return false;
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.s < b.s; });

  std::vector<Region*> regions{current};
  std::vector<SocketImage> sockets;
  std::vector<FdImage> fds;
  std::vector<uint32_t> closes;
  for (size_t i = 0; i < entries.size();) {
    size_t j = i;
    bool survives = false;
    while (j < entries.size() && entries[j].s == entries[i].s) survives |= entries[j++].survives;
    Socket& s = *entries[i].s;
    bool carry = survives;
    uint32_t index = 0;
    if (carry && s.region != nullptr) {
      auto it = std::find(regions.begin(), regions.end(), s.region);
      if (it == regions.end()) it = regions.insert(regions.end(), s.region);
      index = uint32_t(it - regions.begin());
      carry = s.region->memfd >= 0 && !s.region->gone.load();
    }
    if (carry) {
      for (size_t k = i; k < j; ++k)
        if (entries[k].survives) fds.push_back({entries[k].fd, uint32_t(sockets.size())});
      sockets.push_back(sock_image(s, index));
    } else if (s.shunted()) {
      closes.push_back(s.ctl_slot);
    }
    i = j;
  }

  Header h{kMagic,          abi::kVersion,         sizeof(RegionImage), sizeof(SocketImage),
           sizeof(FdImage), rt.next_cookie(),      uint32_t(regions.size()),
           uint32_t(sockets.size()), uint32_t(fds.size()), uint32_t(closes.size())};
  std::vector<RegionImage> ris;
  for (Region* r : regions)
    ris.push_back({r->id, r->memfd, r->app_bell, r->daemon_bell, r == current ? r->ctl_fd : -1,
                   r->size});
  state_fd_ = memfd_create("shunt-exec", 0);  // not close-on-exec: the new image reads it
  if (state_fd_ < 0 || !write_all(state_fd_, &h, sizeof h) ||
      !write_all(state_fd_, ris.data(), ris.size() * sizeof(RegionImage)) ||
      !write_all(state_fd_, sockets.data(), sockets.size() * sizeof(SocketImage)) ||
      !write_all(state_fd_, fds.data(), fds.size() * sizeof(FdImage)) ||
      !write_all(state_fd_, closes.data(), closes.size() * sizeof(uint32_t))) {
    SHUNT_WARN("exec %s: cannot write the exec state (%s): its shunted sockets are closed", target,
               strerror(errno));
    undo();
    return false;
  }
  for (const RegionImage& ri : ris) {
    for (int fd : {ri.memfd, ri.app_bell, ri.daemon_bell, ri.ctl_fd}) {
      int flags = fd >= 0 ? libc().fcntl(fd, F_GETFD) : -1;
      if (flags < 0 || (flags & FD_CLOEXEC) == 0) continue;
      libc().fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
      cleared_.push_back(fd);
    }
  }

  // The environment: the caller's, with libshunt.so preloaded, the SHUNT_* variables
  // this image started with where the caller dropped them, and the state's fd.
  const char* lib = g_library_path;
  bool preload_seen = false;
  for (char* const* e = envp; e != nullptr && *e != nullptr; ++e) {
    if (strncmp(*e, kStateVar, sizeof kStateVar - 1) == 0 && (*e)[sizeof kStateVar - 1] == '=')
      continue;
    if (strncmp(*e, "LD_PRELOAD=", 11) == 0) {
      preload_seen = true;
      if (lib != nullptr && strstr(*e, lib) == nullptr) {
        char* s = nullptr;
        if (asprintf(&s, "LD_PRELOAD=%s %s", lib, *e + 11) < 0) continue;
        owned_.push_back(s);
        env_.push_back(s);
        continue;
      }
    }
    env_.push_back(*e);
  }
  char* s = nullptr;
  if (!preload_seen && lib != nullptr && asprintf(&s, "LD_PRELOAD=%s", lib) >= 0) {
    owned_.push_back(s);
    env_.push_back(s);
  }
  for (size_t k = 0; k < g_kept_count; ++k) {
    bool present = false;
    for (char* const* e = envp; e != nullptr && *e != nullptr && !present; ++e)
      present = names_same_variable(g_kept[k], *e);
    if (!present) env_.push_back(g_kept[k]);
  }
  if (asprintf(&s, "%s=%d", kStateVar, state_fd_) >= 0) {
    owned_.push_back(s);
    env_.push_back(s);
  }
  env_.push_back(nullptr);
  SHUNT_DEBUG("exec %s: carrying %zu sockets (%zu fds), closing %zu", target, sockets.size(),
              fds.size(), closes.size());
  return true;
}

void ExecCarry::undo() {
  for (int fd : cleared_) libc().fcntl(fd, F_SETFD, libc().fcntl(fd, F_GETFD) | FD_CLOEXEC);
  cleared_.clear();
  if (state_fd_ >= 0) libc().close(state_fd_);
  state_fd_ = -1;
}

const char* exec_search_path(const char* file, char* buf, unsigned len) {
  if (file == nullptr || *file == '\0' || strchr(file, '/') != nullptr) return file;
  if (buf == nullptr || len == 0) return file;
  const char* path = getenv("PATH");
  if (path == nullptr) path = "/bin:/usr/bin";
  for (const char* p = path;; ++p) {
    const char* end = strchrnul(p, ':');
    int n = snprintf(buf, len, "%.*s%s%s", int(end - p), p, end == p ? "" : "/", file);
    if (n > 0 && unsigned(n) < len && access(buf, X_OK) == 0) return buf;
    if (*end == '\0') break;
    p = end;
  }
  return file;
}

}  // namespace shunt::preload
