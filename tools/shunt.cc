// shunt — the command-line tool.
//
//   shunt run [--nic DEV] [--ip ADDR/PREFIX] [--gateway IP] [--allow LIST] [--rundir DIR]
//             -- CMD [ARGS...]
//   shunt stat [--rundir DIR] [-a|--all] [--flat]
//   shunt ss [--rundir DIR] [-t] [-u] [-l] [-a] [-n] [-i] [-p]
//   shunt capture [--rundir DIR] -w FILE [-c COUNT]
//   shunt stop [--rundir DIR]
//
// `run` finds the daemon on $RUNDIR/shuntd.sock or starts one (shuntd, next to this
// binary), then execs CMD with libshunt.so in LD_PRELOAD. The others speak the
// control-socket protocol of include/shunt/control.h: `stat` prints the counters
// (grouped, zeros hidden; --flat as the daemon sends them), `ss` the sockets as
// `ss -tanpi` would, `capture` has the daemon write the port's packets to a file that
// this tool opens as the calling user, `stop` stops the daemon. Every option of `run`
// has an environment variable of the same name (SHUNT_NIC …); the option wins.
//
// This tool links only the ABI headers and libc: it is the user's side of the control
// socket, like libshunt.so, and knows nothing of the stack inside.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "shunt/abi.h"
#include "shunt/control.h"
#include "shunt/scm.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 15s;  // daemon start: socket must accept by then
constexpr auto kStopTimeout = 10s;   // shunt stop: daemon must be gone by then
constexpr auto kReplyTimeout = 5s;   // one control-socket answer
constexpr int kLogTailLines = 20;

long long seconds(Clock::duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
}

[[noreturn]] void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char* fmt, ...) {
  std::fputs("shunt: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(1);
}

// A setting with the place it came from, so that errors name what the user wrote.
struct Setting {
  std::string value;
  std::string source;  // "--ip" or "SHUNT_IP"; empty when defaulted
  bool set() const { return !source.empty(); }
  std::string where() const { return source.empty() ? "default" : source; }
};

struct Options {
  Setting nic, ip, gateway, allow, rundir;
  std::vector<char*> command;  // CMD ARGS..., null-terminated when non-empty
};

struct OptionSpec {
  const char* flag;
  const char* env;
  Setting Options::*field;
};

constexpr OptionSpec kOptionSpecs[] = {
    {"--nic", "SHUNT_NIC", &Options::nic},
    {"--ip", "SHUNT_IP", &Options::ip},
    {"--gateway", "SHUNT_GATEWAY", &Options::gateway},
    {"--allow", "SHUNT_ALLOW", &Options::allow},
    {"--rundir", "SHUNT_RUNDIR", &Options::rundir},
};

void usage(FILE* out) {
  std::fputs(
      "usage: shunt run [--nic DEVICE] [--ip ADDR/PREFIX] [--gateway IP] [--allow LIST]\n"
      "                 [--rundir DIR] -- COMMAND [ARGS...]\n"
      "       shunt stat [--rundir DIR] [-a|--all] [--flat]\n"
      "       shunt ss [--rundir DIR] [-t] [-u] [-l] [-a] [-n] [-i] [-p]\n"
      "       shunt capture [--rundir DIR] -w FILE [-c COUNT]\n"
      "       shunt stop [--rundir DIR]\n"
      "\n"
      "  run      use the shuntd answering on DIR/shuntd.sock, or start one, then run\n"
      "           COMMAND with libshunt.so preloaded\n"
      "  stat     print the daemon's counters by group, counters at zero hidden;\n"
      "           -a: all of them; --flat: one \"group.name value\" line each, as sent\n"
      "  ss       list the daemon's sockets like ss -tanpi: -t TCP (the default), -u UDP,\n"
      "           -l listening only, -a every state, -i TCP internals, -n and -p are\n"
      "           implied (addresses are numeric, processes always shown)\n"
      "  capture  have the daemon write the port's packets (pcapng) to FILE, opened as\n"
      "           you ('-' for standard output): COUNT packets, or until interrupted;\n"
      "           only root or the daemon's user may capture\n"
      "  stop     stop the daemon and wait until it is gone (root or the daemon's user)\n"
      "\n"
      "Options and their variables: --nic SHUNT_NIC, --ip SHUNT_IP, --gateway\n"
      "SHUNT_GATEWAY, --allow SHUNT_ALLOW (who besides root and the daemon's user may\n"
      "attach: user:NAME, group:NAME, ... or any; used when run starts the daemon),\n"
      "--rundir SHUNT_RUNDIR (default /run/shunt). SHUNT_DAEMON and SHUNT_PRELOAD\n"
      "override where shuntd and libshunt.so are found.\n",
      out);
}

// A subcommand's own option: a switch (`on`) or one with a value (`value`). Letters
// may be combined as in `ss -tanpi`; a letter with a value takes the rest of its
// word or the next one (-c5, -c 5). letter 0: long form only; name null: short only.
struct Flag {
  char letter;
  const char* name;
  bool* on;
  std::string* value;
};

using Flags = std::initializer_list<Flag>;

// Parses argv[*i] as one of `flags`, advancing *i past a value it takes. False if
// it is none of them.
bool parse_flag(int argc, char** argv, int* i, const char* sub, Flags flags) {
  std::string_view a = argv[*i];
  auto take = [&](const Flag& f, std::string_view inline_value, const std::string& shown) {
    if (inline_value.empty()) {
      if (*i + 1 >= argc) die("%s %s: missing value", sub, shown.c_str());
      inline_value = argv[++*i];
    }
    if (inline_value.empty()) die("%s %s: empty value", sub, shown.c_str());
    *f.value = std::string(inline_value);
  };
  if (a.starts_with("--")) {
    for (const Flag& f : flags) {
      if (f.name == nullptr) continue;
      std::string_view n = f.name;
      if (a == n) {
        if (f.on != nullptr) *f.on = true;
        else take(f, {}, f.name);
        return true;
      }
      if (f.value != nullptr && a.starts_with(n) && a.size() > n.size() && a[n.size()] == '=') {
        if (a.size() == n.size() + 1) die("%s %s: empty value", sub, f.name);
        take(f, a.substr(n.size() + 1), f.name);
        return true;
      }
    }
    return false;
  }
  if (a.size() < 2) return false;
  for (size_t k = 1; k < a.size(); ++k) {
    const Flag* f = nullptr;
    for (const Flag& g : flags) {
      if (g.letter != 0 && g.letter == a[k]) f = &g;
    }
    if (f == nullptr) return false;
    if (f->on != nullptr) {
      *f->on = true;
      continue;
    }
    take(*f, a.substr(k + 1), std::string("-") + a[k]);
    return true;
  }
  return true;
}

// Parses OPTIONS [--] [COMMAND...] after the subcommand. allow_command: `run` only.
// `flags`: the subcommand's own options besides those of kOptionSpecs.
Options parse(int argc, char** argv, const char* sub, bool allow_command, Flags flags = {}) {
  Options o;
  for (const auto& s : kOptionSpecs) {
    if (const char* v = std::getenv(s.env); v != nullptr && *v != '\0') {
      o.*s.field = Setting{v, s.env};
    }
  }
  int i = 0;
  for (; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (!a.starts_with("-")) break;  // the command starts here
    const OptionSpec* spec = nullptr;
    std::string value;
    for (const auto& s : kOptionSpecs) {
      std::string_view f = s.flag;
      if (a == f) {
        if (i + 1 >= argc) die("%s %s: missing value", sub, s.flag);
        spec = &s;
        value = argv[++i];
      } else if (a.starts_with(f) && a.size() > f.size() && a[f.size()] == '=') {
        spec = &s;
        value = std::string(a.substr(f.size() + 1));
      }
      if (spec != nullptr) break;
    }
    if (spec == nullptr) {
      if (parse_flag(argc, argv, &i, sub, flags)) continue;
      die("%s: unknown option '%s' (try shunt --help)", sub, argv[i]);
    }
    if (value.empty()) die("%s %s: empty value", sub, spec->flag);
    o.*spec->field = Setting{value, spec->flag};
  }
  if (!o.rundir.set()) o.rundir = Setting{shunt::ctl::kDefaultRundir, ""};
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  if (!allow_command && !o.command.empty()) {
    die("%s: unexpected argument '%s'", sub, o.command.front());
  }
  if (!o.command.empty()) o.command.push_back(nullptr);
  return o;
}

bool valid_ipv4(const std::string& s) {
  in_addr a{};
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

// ADDR or ADDR/PREFIX, PREFIX 1..32: what shuntd accepts in SHUNT_IP.
bool valid_ipv4_prefix(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return valid_ipv4(s);
  std::string prefix = s.substr(slash + 1);
  if (prefix.empty() || prefix.size() > 2) return false;
  for (char c : prefix) {
    if (c < '0' || c > '9') return false;
  }
  int n = std::atoi(prefix.c_str());
  return n >= 1 && n <= 32 && valid_ipv4(s.substr(0, slash));
}

std::string socket_path(const Options& o) {
  return o.rundir.value + "/" + shunt::ctl::kSocketName;
}

// Connects to the control socket. Returns the fd, or -1 with errno set.
int connect_control(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool daemon_answers(const std::string& path) {
  int fd = connect_control(path);
  if (fd < 0) return false;
  close(fd);
  return true;
}

void check_path_length(const Options& o) {
  if (socket_path(o).size() >= sizeof(sockaddr_un{}.sun_path)) {
    die("%s '%s': too long for a unix socket path (%zu bytes at most)", o.rundir.where().c_str(),
        o.rundir.value.c_str(),
        sizeof(sockaddr_un{}.sun_path) - 1 - std::strlen(shunt::ctl::kSocketName) - 1);
  }
}

// A connection that fails like this means "no daemon here"; anything else is an error.
bool no_daemon_errno(int e) { return e == ENOENT || e == ECONNREFUSED; }

std::string exe_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) die("cannot read /proc/self/exe: %s", std::strerror(errno));
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

// The file from `env` if set, else `fallback` beside this binary; made absolute.
std::string locate(const char* env, const std::string& fallback, const char* what, int mode) {
  const char* v = std::getenv(env);
  std::string path = (v != nullptr && *v != '\0') ? v : fallback;
  const char* source = (v != nullptr && *v != '\0') ? env : "default";
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) == nullptr || access(resolved, mode) != 0) {
    die("%s not found at '%s' (%s: %s); build it or set %s", what, path.c_str(), source,
        std::strerror(errno), env);
  }
  return resolved;
}

void mkdir_p(const std::string& dir, const char* source) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    cur = dir.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      die("%s '%s': cannot create '%s': %s", source, dir.c_str(), cur.c_str(),
          std::strerror(errno));
    }
  }
  struct stat st{};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    die("%s '%s': not a directory", source, dir.c_str());
  }
}

void print_log_tail(const std::string& log) {
  FILE* f = std::fopen(log.c_str(), "r");
  if (f == nullptr) {
    std::fprintf(stderr, "shunt: (no log at %s: %s)\n", log.c_str(), std::strerror(errno));
    return;
  }
  std::vector<std::string> lines;
  char buf[1024];
  while (std::fgets(buf, sizeof(buf), f) != nullptr) {
    lines.emplace_back(buf);
    if (lines.size() > 4 * kLogTailLines) lines.erase(lines.begin(), lines.end() - kLogTailLines);
  }
  std::fclose(f);
  size_t from = lines.size() > kLogTailLines ? lines.size() - kLogTailLines : 0;
  std::fprintf(stderr, "shunt: last lines of %s:\n", log.c_str());
  for (size_t i = from; i < lines.size(); ++i) std::fputs(("  " + lines[i]).c_str(), stderr);
  if (!lines.empty() && lines.back().back() != '\n') std::fputc('\n', stderr);
}

// True once `pid` (not our child) has exited. pidfd when the kernel has it (5.3+);
// otherwise kill(0) plus a look for a zombie in /proc.
struct ProcessWatch {
  pid_t pid;
  int pidfd;
  explicit ProcessWatch(pid_t p) : pid(p), pidfd(static_cast<int>(syscall(SYS_pidfd_open, p, 0))) {}
  ~ProcessWatch() {
    if (pidfd >= 0) close(pidfd);
  }
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  // Waits up to `ms` for the exit; returns true if the process is gone.
  bool gone(int ms) const {
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      return poll(&p, 1, ms) > 0;
    }
    if (pid <= 0) {
      usleep(static_cast<useconds_t>(ms) * 1000);
      return false;
    }
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (FILE* f = std::fopen(path, "r")) {
      char state = 0;
      int n = std::fscanf(f, "%*d (%*[^)]) %c", &state);
      std::fclose(f);
      if (n == 1 && state == 'Z') return true;
    }
    usleep(static_cast<useconds_t>(ms) * 1000);
    return false;
  }
};

// Starts shuntd detached (own session, reparented away from us so that CMD, which
// replaces this process, never sees it as a child), and waits for its socket.
void start_daemon(const Options& o) {
  std::string daemon = locate("SHUNT_DAEMON", exe_dir() + "/shuntd", "shuntd", X_OK);
  std::string log = o.rundir.value + "/shuntd.log";
  std::string sock = socket_path(o);

  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) die("pipe: %s", std::strerror(errno));
  pid_t child = fork();
  if (child < 0) die("fork: %s", std::strerror(errno));
  if (child == 0) {
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) {
      // Intermediate: report the daemon's pid (or -1) and leave; init adopts it.
      ssize_t ignored = write(pipefd[1], &grandchild, sizeof(grandchild));
      (void)ignored;
      _exit(grandchild < 0 ? 1 : 0);
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (null_fd < 0 || log_fd < 0) _exit(126);
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    char* args[] = {const_cast<char*>(daemon.c_str()), nullptr};
    execv(daemon.c_str(), args);
    dprintf(STDERR_FILENO, "shunt: cannot execute %s: %s\n", daemon.c_str(), std::strerror(errno));
    _exit(127);
  }
  close(pipefd[1]);
  pid_t daemon_pid = -1;
  ssize_t n = read(pipefd[0], &daemon_pid, sizeof(daemon_pid));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (n != sizeof(daemon_pid) || daemon_pid <= 0) {
    die("cannot start %s: fork failed", daemon.c_str());
  }

  ProcessWatch watch(daemon_pid);
  auto deadline = Clock::now() + kStartTimeout;
  while (Clock::now() < deadline) {
    if (daemon_answers(sock)) return;
    if (watch.gone(100)) {
      if (daemon_answers(sock)) return;  // another shuntd won a race for the socket
      std::fprintf(stderr, "shunt: shuntd (pid %d) exited during start-up (NIC %s from %s)\n",
                   daemon_pid, o.nic.value.c_str(), o.nic.where().c_str());
      print_log_tail(log);
      std::exit(1);
    }
  }
  // We started it and it is of no use to anyone: do not leave it behind.
  kill(daemon_pid, SIGTERM);
  std::fprintf(stderr,
               "shunt: shuntd (pid %d) did not accept connections on %s within %lld s; "
               "stopped it\n",
               daemon_pid, sock.c_str(), seconds(kStartTimeout));
  print_log_tail(log);
  std::exit(1);
}

int cmd_run(int argc, char** argv) {
  Options o = parse(argc, argv, "run", true);
  if (o.command.empty()) die("run: no command given (shunt run [OPTIONS] -- COMMAND [ARGS...])");
  check_path_length(o);
  if (o.ip.set() && !valid_ipv4_prefix(o.ip.value)) {
    die("run: %s '%s' is not an IPv4 ADDR[/PREFIX] (e.g. 198.18.7.1/24)", o.ip.source.c_str(),
        o.ip.value.c_str());
  }
  if (o.gateway.set() && !valid_ipv4(o.gateway.value)) {
    die("run: %s '%s' is not an IPv4 address", o.gateway.source.c_str(), o.gateway.value.c_str());
  }

  // The daemon and the application read the same variables.
  for (const auto& s : kOptionSpecs) {
    const Setting& v = o.*s.field;
    if (v.set() || s.field == &Options::rundir) setenv(s.env, v.value.c_str(), 1);
  }
  std::string preload =
      locate("SHUNT_PRELOAD", exe_dir() + "/../lib/libshunt.so", "libshunt.so", R_OK);

  std::string sock = socket_path(o);
  if (!daemon_answers(sock)) {
    if (!o.nic.set()) {
      die("run: no daemon answers on %s and no NIC to start one: give --nic DEVICE or set "
          "SHUNT_NIC", sock.c_str());
    }
    if (!o.ip.set()) {
      die("run: no daemon answers on %s and no address to start one: give --ip ADDR/PREFIX or "
          "set SHUNT_IP", sock.c_str());
    }
    mkdir_p(o.rundir.value, o.rundir.where().c_str());
    // Serialize concurrent `shunt run`s on one rundir: one starts the daemon, the others find it.
    std::string lock = o.rundir.value + "/shuntd.lock";
    int lock_fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) die("run: cannot open %s: %s", lock.c_str(), std::strerror(errno));
    if (flock(lock_fd, LOCK_EX) != 0) {
      die("run: cannot lock %s: %s", lock.c_str(), std::strerror(errno));
    }
    if (!daemon_answers(sock)) start_daemon(o);
    close(lock_fd);
  }

  std::string ld = preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
    ld += ":";
    ld += old;
  }
  setenv("LD_PRELOAD", ld.c_str(), 1);
  execvp(o.command[0], o.command.data());
  int e = errno;
  std::fprintf(stderr, "shunt: run: cannot execute '%s': %s\n", o.command[0], std::strerror(e));
  return e == ENOENT ? 127 : 126;
}

namespace ctl = shunt::ctl;

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

ctl::Request make_request(ctl::Type type) {
  ctl::Request r{};
  r.type = static_cast<uint32_t>(type);
  r.abi_version = shunt::abi::kVersion;
  r.pid = getpid();
  return r;
}

// Sends one request, with `pass_fd` attached unless it is -1; returns the connected
// fd. Dies with a clear message if no daemon answers.
int send_request(const Options& o, const char* sub, const ctl::Request& req, int pass_fd = -1) {
  std::string sock = socket_path(o);
  int fd = connect_control(sock);
  if (fd < 0) {
    die("%s: no daemon answers on %s (%s, %s): %s", sub, sock.c_str(),
        o.rundir.set() ? o.rundir.source.c_str() : "default rundir", o.rundir.value.c_str(),
        std::strerror(errno));
  }
  ssize_t n = shunt::scm::send(fd, &req, sizeof(req), &pass_fd, pass_fd < 0 ? 0 : 1);
  if (n != static_cast<ssize_t>(sizeof(req))) {
    die("%s: send to %s: %s", sub, sock.c_str(), std::strerror(n < 0 ? int(-n) : EMSGSIZE));
  }
  return fd;
}

// Receives one message (up to `cap` bytes) by `deadline`. Returns its size, 0 on
// hang-up, -1 with errno set on timeout (ETIMEDOUT), error, or a message longer
// than cap (EPROTO).
ssize_t recv_reply(int fd, void* buf, size_t cap, Clock::time_point deadline) {
  pollfd p{fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, ms_until(deadline));
  } while (r < 0 && errno == EINTR);
  if (r == 0) errno = ETIMEDOUT;
  if (r <= 0) return -1;
  int nfds = 0;
  ssize_t n = shunt::scm::recv(fd, buf, cap, nullptr, 0, &nfds);
  if (n < 0) {
    errno = static_cast<int>(-n);
    return -1;
  }
  return n;
}

ssize_t recv_reply(int fd, void* buf, size_t cap) {
  return recv_reply(fd, buf, cap, Clock::now() + kReplyTimeout);
}

// ---- tables ----

struct Column {
  bool right = false;  // right-aligned: numbers, and addresses before their ":port"
  int gap = 1;         // spaces before the column
};

// Prints rows padded into columns (the last one unpadded, trailing blanks dropped),
// each prefixed with `indent`. notes[r], when given and not empty, follows row r on
// a line of its own (ss -i).
void print_table(const std::vector<std::vector<std::string>>& rows,
                 const std::vector<Column>& cols, const std::string& indent = "",
                 const std::vector<std::string>* notes = nullptr) {
  std::vector<size_t> width(cols.size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < cols.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line = indent;
    for (size_t c = 0; c < rows[r].size() && c < cols.size(); ++c) {
      const std::string& cell = rows[r][c];
      size_t pad = width[c] - cell.size();
      if (c > 0) line.append(static_cast<size_t>(cols[c].gap), ' ');
      if (cols[c].right) line.append(pad, ' ');
      line += cell;
      if (!cols[c].right && c + 1 < cols.size()) line.append(pad, ' ');
    }
    while (line.size() > indent.size() && line.back() == ' ') line.pop_back();
    std::puts(line.c_str());
    if (notes != nullptr && r < notes->size() && !(*notes)[r].empty()) {
      std::puts((*notes)[r].c_str());
    }
  }
}

// ---- stat ----

// The daemon's counters as text, or death with its reason.
std::string fetch_stats(const Options& o) {
  int fd = send_request(o, "stat", make_request(ctl::Type::kStats));
  std::vector<char> buf(ctl::kStatsMax + 1);
  ssize_t n = recv_reply(fd, buf.data(), buf.size());
  close(fd);
  if (n < 0) die("stat: no answer from %s: %s", socket_path(o).c_str(), std::strerror(errno));
  if (n == 0) die("stat: %s hung up without answering", socket_path(o).c_str());
  std::string text(buf.data(), strnlen(buf.data(), static_cast<size_t>(n)));  // maybe NUL-ended
  if (text.starts_with("error ")) {
    while (!text.empty() && text.back() == '\n') text.pop_back();
    die("stat: %s", text.c_str());
  }
  return text;
}

struct Counter {
  std::string name, value;
};

struct Group {
  std::string name;
  std::vector<Counter> counters;
};

// One attached application: its pid and app.<pid>.<field> values.
struct AppRow {
  std::string pid;
  std::map<std::string, std::string> fields;
};

struct AppColumn {
  const char* field;
  const char* heading;
  bool right;
};

constexpr AppColumn kAppColumns[] = {
    {"comm", "COMMAND", false}, {"uid", "UID", true},         {"region", "REGION", true},
    {"sockets", "SOCKETS", true}, {"closing", "CLOSING", true}, {"commands", "COMMANDS", true},
};

void print_apps(const std::vector<AppRow>& apps) {
  std::puts("app");
  if (apps.empty()) {
    std::puts("  (none)");
    return;
  }
  std::vector<std::vector<std::string>> rows(1);
  std::vector<Column> cols{{true, 0}};
  rows[0].push_back("PID");
  for (const auto& c : kAppColumns) {
    rows[0].push_back(c.heading);
    cols.push_back({c.right, 2});
  }
  for (const auto& app : apps) {
    std::vector<std::string> row{app.pid};
    for (const auto& c : kAppColumns) {
      auto it = app.fields.find(c.field);
      row.push_back(it == app.fields.end() ? "-" : it->second);
    }
    rows.push_back(std::move(row));
  }
  print_table(rows, cols, "  ");
}

// Grouped by what comes before the first dot, in the order the daemon sends them;
// counters at zero hidden unless `all` (text values, such as port.driver, are always
// shown); the applications as a table.
void print_stats(const std::string& text, bool all) {
  std::vector<Group> groups;
  std::map<std::string, size_t> group_index;
  std::vector<AppRow> apps;
  auto group = [&](const std::string& name) -> Group& {
    auto [it, fresh] = group_index.emplace(name, groups.size());
    if (fresh) groups.push_back(Group{name, {}});
    return groups[it->second];
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    size_t space = line.find(' ');
    std::string key = line.substr(0, space);
    std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    size_t dot = key.find('.');
    std::string name = dot == std::string::npos ? key : key.substr(dot + 1);
    Group& g = group(key.substr(0, dot));
    if (g.name != "app") {
      g.counters.push_back(Counter{name, value});
      continue;
    }
    size_t dot2 = name.find('.');
    std::string pid = name.substr(0, dot2);
    std::string field = dot2 == std::string::npos ? "" : name.substr(dot2 + 1);
    // The daemon sends each application's lines together.
    if (apps.empty() || apps.back().pid != pid) apps.push_back(AppRow{pid, {}});
    apps.back().fields[field] = value;
  }
  group("app");  // shown even when no application is attached
  size_t hidden = 0;
  for (const Group& g : groups) {
    if (g.name == "app") {
      print_apps(apps);
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    for (const Counter& c : g.counters) {
      if (!all && c.value == "0") {
        ++hidden;
        continue;
      }
      rows.push_back({c.name, c.value});
    }
    if (rows.empty()) continue;
    std::puts(g.name.c_str());
    print_table(rows, {{false, 0}, {false, 2}}, "  ");
  }
  if (hidden > 0) {
    std::printf("(%zu counters at zero not shown; shunt stat -a shows all)\n", hidden);
  }
}

int cmd_stat(int argc, char** argv) {
  bool all = false, flat = false;
  Options o = parse(argc, argv, "stat", false,
                    {{'a', "--all", &all, nullptr}, {0, "--flat", &flat, nullptr}});
  check_path_length(o);
  std::string text = fetch_stats(o);
  if (flat) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
  } else {
    print_stats(text, all);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- ss ----

std::vector<ctl::SocketInfo> fetch_sockets(const Options& o) {
  std::string sock = socket_path(o);
  int fd = send_request(o, "ss", make_request(ctl::Type::kSockets));
  auto deadline = Clock::now() + kReplyTimeout;  // for the whole list
  auto msg = std::make_unique<ctl::SocketList>();
  constexpr size_t kHead = offsetof(ctl::SocketList, sockets);
  std::vector<ctl::SocketInfo> out;
  for (;;) {
    ssize_t n = recv_reply(fd, msg.get(), sizeof(ctl::SocketList), deadline);
    if (n < 0) die("ss: no complete answer from %s: %s", sock.c_str(), std::strerror(errno));
    if (n == 0) die("ss: %s hung up before the end of the list", sock.c_str());
    size_t len = static_cast<size_t>(n);
    if (len < kHead || msg->count > ctl::kSocketsPerMessage ||
        len != kHead + msg->count * sizeof(ctl::SocketInfo)) {
      die("ss: malformed socket list from %s (%zu bytes)", sock.c_str(), len);
    }
    out.insert(out.end(), msg->sockets, msg->sockets + msg->count);
    if (msg->last != 0) break;
  }
  close(fd);
  return out;
}

bool is_tcp(const ctl::SocketInfo& s) { return s.proto == uint8_t(ctl::Proto::kTcp); }

bool has_state(const ctl::SocketInfo& s, ctl::LinuxTcpState state) {
  return s.state == static_cast<uint8_t>(state);
}

const char* state_name(const ctl::SocketInfo& s) {
  // Indexed by LinuxTcpState, spelled as ss spells them.
  static constexpr const char* kNames[] = {
      "UNKNOWN",   "ESTAB",      "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
      "TIME-WAIT", "CLOSE",      "CLOSE-WAIT", "LAST-ACK", "LISTEN",   "CLOSING",
  };
  if (!is_tcp(s) && has_state(s, ctl::LinuxTcpState::kClose)) return "UNCONN";
  return s.state < std::size(kNames) ? kNames[s.state] : "UNKNOWN";
}

// ss's defaults: connections only; -l: what waits for them (TCP listeners,
// unconnected UDP); -a: everything.
bool state_shown(const ctl::SocketInfo& s, bool listening, bool every) {
  if (every) return true;
  bool waiting = is_tcp(s) ? has_state(s, ctl::LinuxTcpState::kListen)
                           : has_state(s, ctl::LinuxTcpState::kClose);
  return listening == waiting;
}

std::string ip_text(uint32_t ip_be) {
  in_addr a{};
  a.s_addr = ip_be;
  char buf[INET_ADDRSTRLEN];
  return inet_ntop(AF_INET, &a, buf, sizeof(buf)) != nullptr ? buf : "?";
}

std::string port_text(uint16_t port_be) {
  return port_be == 0 ? "*" : std::to_string(ntohs(port_be));
}

// Milliseconds from microseconds, as ss prints them: up to 3 decimals, no trailing zeros.
std::string ms_text(uint32_t us) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%u.%03u", us / 1000, us % 1000);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// The second line of `ss -i`, from what the daemon knows of a TCP connection.
std::string tcp_info(const ctl::SocketInfo& s) {
  std::string out = "\t";
  out += s.congestion == 0   ? "reno"
         : s.congestion == 1 ? "cubic"
                             : "cc" + std::to_string(s.congestion);
  out += " wscale:" + std::to_string(s.snd_wscale) + "," + std::to_string(s.rcv_wscale);
  out += " rto:" + ms_text(s.rto_us);
  out += " rtt:" + ms_text(s.srtt_us) + "/" + ms_text(s.rttvar_us);
  out += " mss:" + std::to_string(s.mss);
  // Windows in segments, as ss counts them; without an MSS there are none to count.
  if (s.mss != 0) {
    out += " cwnd:" + std::to_string(s.cwnd / s.mss);
    if (s.ssthresh != 0xffffffffu) out += " ssthresh:" + std::to_string(s.ssthresh / s.mss);
  }
  out += " bytes_acked:" + std::to_string(s.bytes_acked);
  out += " bytes_received:" + std::to_string(s.bytes_received);
  out += " send_wnd:" + std::to_string(s.snd_wnd);
  out += " rcv_wnd:" + std::to_string(s.rcv_wnd);
  out += " retrans:" + std::to_string(s.backoff) + "/" + std::to_string(s.retransmits);
  return out;
}

// What ss shows of a socket's holder, users:(("COMM",pid=PID,fd=FD)), from /proc:
// the fd is the holder's placeholder socket, found by its inode (readable only for
// our own processes, or as root).
class Holders {
 public:
  std::string users(int32_t pid, uint64_t inode) {
    if (pid <= 0) return "";
    auto [it, fresh] = procs_.try_emplace(pid);
    if (fresh) load(pid, &it->second);
    const Proc& p = it->second;
    std::string out = "users:((\"" + p.comm + "\",pid=" + std::to_string(pid);
    if (auto f = p.fds.find(inode); f != p.fds.end()) out += ",fd=" + std::to_string(f->second);
    return out + "))";
  }

 private:
  struct Proc {
    std::string comm = "?";
    std::map<uint64_t, int> fds;  // socket inode -> lowest fd
  };

  static void load(int32_t pid, Proc* p) {
    std::string dir = "/proc/" + std::to_string(pid);
    if (FILE* f = std::fopen((dir + "/comm").c_str(), "r")) {
      char buf[64];
      if (std::fgets(buf, sizeof(buf), f) != nullptr) {
        p->comm = buf;
        if (!p->comm.empty() && p->comm.back() == '\n') p->comm.pop_back();
      }
      std::fclose(f);
    }
    DIR* d = opendir((dir + "/fd").c_str());
    if (d == nullptr) return;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      char link[64];
      ssize_t n = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
      if (n <= 0) continue;
      link[n] = '\0';
      unsigned long long inode = 0;
      if (std::sscanf(link, "socket:[%llu]", &inode) != 1) continue;
      int fd = std::atoi(e->d_name);
      auto [it, fresh] = p->fds.emplace(inode, fd);
      if (!fresh && fd < it->second) it->second = fd;
    }
    closedir(d);
  }

  std::map<int32_t, Proc> procs_;
};

int cmd_ss(int argc, char** argv) {
  bool tcp = false, udp = false, listening = false, every = false, info = false;
  bool numeric = false, processes = false;  // accepted for ss's sake; always so here
  Options o = parse(argc, argv, "ss", false,
                    {{'t', "--tcp", &tcp, nullptr},
                     {'u', "--udp", &udp, nullptr},
                     {'l', "--listening", &listening, nullptr},
                     {'a', "--all", &every, nullptr},
                     {'n', "--numeric", &numeric, nullptr},
                     {'i', "--info", &info, nullptr},
                     {'p', "--processes", &processes, nullptr}});
  if (!tcp && !udp) tcp = true;
  check_path_length(o);
  std::vector<ctl::SocketInfo> shown;
  for (const auto& s : fetch_sockets(o)) {
    if ((is_tcp(s) ? tcp : udp) && state_shown(s, listening, every)) shown.push_back(s);
  }
  auto key = [](const ctl::SocketInfo& s) {
    return std::tuple(s.proto, s.state, ntohs(s.local_port), ntohl(s.local_ip),
                      ntohl(s.remote_ip), ntohs(s.remote_port));
  };
  std::stable_sort(shown.begin(), shown.end(),
                   [&](const auto& a, const auto& b) { return key(a) < key(b); });

  // Like ss: a Netid column only when more than one protocol is listed; each address
  // right-aligned against its ":port".
  bool netid = tcp && udp;
  std::vector<Column> cols;
  std::vector<std::string> header;
  if (netid) {
    cols.push_back({false, 0});
    header.push_back("Netid");
  }
  for (Column c : {Column{false, 1}, Column{false, 1}, Column{false, 1}, Column{true, 1},
                   Column{false, 0}, Column{true, 1}, Column{false, 0}, Column{false, 1}}) {
    cols.push_back(c);
  }
  cols.front().gap = 0;
  for (const char* h : {"State", "Recv-Q", "Send-Q", "Local Address", ":Port", "Peer Address",
                        ":Port", "Process"}) {
    header.push_back(h);
  }
  std::vector<std::vector<std::string>> rows{header};
  std::vector<std::string> notes{""};
  Holders holders;
  for (const auto& s : shown) {
    std::vector<std::string> row;
    if (netid) row.push_back(is_tcp(s) ? "tcp" : "udp");
    row.push_back(state_name(s));
    row.push_back(std::to_string(s.rx_queue));
    row.push_back(std::to_string(s.tx_queue));
    row.push_back(ip_text(s.local_ip));
    row.push_back(":" + port_text(s.local_port));
    row.push_back(ip_text(s.remote_ip));
    row.push_back(":" + port_text(s.remote_port));
    row.push_back(holders.users(s.pid, s.inode));
    rows.push_back(std::move(row));
    bool connection = is_tcp(s) && !has_state(s, ctl::LinuxTcpState::kListen);
    notes.push_back(info && connection ? tcp_info(s) : "");
  }
  print_table(rows, cols, "", &notes);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- capture ----

volatile sig_atomic_t g_signal = 0;

void on_signal(int sig) { g_signal = sig; }

enum class Wait { kReply, kHangUp, kSignal, kTimeout, kError };

// Waits for one CaptureReply, up to timeout_ms (-1: no limit), or for SIGINT/SIGTERM
// (blocked outside this wait, so that none slips in between the check and ppoll).
Wait wait_capture_reply(int fd, ctl::CaptureReply* reply, const sigset_t& waitmask,
                        int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  timespec ts{timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
  for (;;) {
    if (g_signal != 0) return Wait::kSignal;
    int r = ppoll(&p, 1, timeout_ms < 0 ? nullptr : &ts, &waitmask);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Wait::kError;
    if (r == 0) return Wait::kTimeout;
    int nfds = 0;
    ssize_t n = shunt::scm::recv(fd, reply, sizeof(*reply), nullptr, 0, &nfds);
    if (n == 0) return Wait::kHangUp;
    if (n < 0 || size_t(n) != sizeof(*reply)) {
      errno = n < 0 ? static_cast<int>(-n) : EPROTO;
      return Wait::kError;
    }
    return Wait::kReply;
  }
}

const char* capture_refusal(int err) {
  switch (err) {
    case EACCES: return "only root or the daemon's user may capture";
    case ENOTSUP: return "the daemon's port cannot capture";
    case EBUSY: return "a capture already runs on this daemon";
    case EBADF: return "the daemon received no file to write to";
    default: return std::strerror(err);
  }
}

int cmd_capture(int argc, char** argv) {
  std::string file, count_text;
  Options o = parse(argc, argv, "capture", false,
                    {{'w', "--write", nullptr, &file}, {'c', "--count", nullptr, &count_text}});
  if (file.empty()) die("capture: no output file given (shunt capture -w FILE [-c COUNT])");
  uint32_t count = 0;
  if (!count_text.empty()) {
    char* end = nullptr;
    errno = 0;
    unsigned long long n = std::strtoull(count_text.c_str(), &end, 10);
    if (count_text[0] < '0' || count_text[0] > '9' || *end != '\0' || errno != 0 ||
        n > UINT32_MAX) {
      die("capture -c '%s': not a number of packets (0: until interrupted)", count_text.c_str());
    }
    count = static_cast<uint32_t>(n);
  }
  check_path_length(o);

  // Opened here, as the caller: the daemon writes only where the caller may.
  bool to_stdout = file == "-";
  bool created = false;
  int out = STDOUT_FILENO;
  if (!to_stdout) {
    out = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    created = out >= 0;
    if (out < 0 && errno == EEXIST) out = open(file.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (out < 0) die("capture: cannot open %s for writing: %s", file.c_str(), std::strerror(errno));
  }
  const std::string shown = to_stdout ? "standard output" : file;

  sigset_t block, waitmask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &waitmask);
  sigdelset(&waitmask, SIGINT);
  sigdelset(&waitmask, SIGTERM);
  // Installed even where the shell ignores SIGINT (a background job), as tcpdump does,
  // so that `kill -INT` ends a capture started with `&`.
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  ctl::Request req = make_request(ctl::Type::kCapture);
  req.count = count;
  int fd = send_request(o, "capture", req, out);
  if (!to_stdout) close(out);  // the daemon has its own copy

  auto signal_name = [] { return g_signal == SIGINT ? "SIGINT" : "SIGTERM"; };
  ctl::CaptureReply reply{};
  Wait w = wait_capture_reply(fd, &reply, waitmask, ms_until(Clock::now() + kReplyTimeout));
  if (w == Wait::kSignal) {
    close(fd);  // the daemon stops a capture when its requester hangs up
    std::fprintf(stderr, "capture to %s cancelled by %s before it started\n", shown.c_str(),
                 signal_name());
    return 0;
  }
  if (w != Wait::kReply || reply.status < 0) {
    if (created) unlink(file.c_str());  // nothing was written: leave no empty file behind
    if (w == Wait::kTimeout) {
      die("capture: no answer from %s within %lld s", socket_path(o).c_str(),
          seconds(kReplyTimeout));
    }
    if (w == Wait::kHangUp) die("capture: %s hung up without answering", socket_path(o).c_str());
    if (w == Wait::kError) die("capture: %s: %s", socket_path(o).c_str(), std::strerror(errno));
    die("capture: refused: %s", capture_refusal(-reply.status));
  }
  if (reply.done == 0) {
    if (count > 0) std::fprintf(stderr, "capturing to %s (%u packets)\n", shown.c_str(), count);
    else std::fprintf(stderr, "capturing to %s (until interrupted)\n", shown.c_str());
  }
  while (reply.done == 0) {
    w = wait_capture_reply(fd, &reply, waitmask, -1);
    if (w == Wait::kSignal) {
      close(fd);
      std::fprintf(stderr, "capture stopped by %s; %s holds the packets written until then\n",
                   signal_name(), shown.c_str());
      return 0;
    }
    if (w == Wait::kHangUp) {
      die("capture: the daemon hung up before the capture finished; %s may be incomplete",
          shown.c_str());
    }
    if (w != Wait::kReply) die("capture: %s: %s", socket_path(o).c_str(), std::strerror(errno));
    if (reply.status < 0) {
      die("capture: failed after %llu packets: %s", static_cast<unsigned long long>(reply.packets),
          std::strerror(-reply.status));
    }
  }
  close(fd);
  std::fprintf(stderr, "%llu packets written to %s\n",
               static_cast<unsigned long long>(reply.packets), shown.c_str());
  return 0;
}

// ---- stop ----

int cmd_stop(int argc, char** argv) {
  Options o = parse(argc, argv, "stop", false);
  check_path_length(o);
  std::string sock = socket_path(o);
  int fd = connect_control(sock);
  if (fd < 0) {
    if (!no_daemon_errno(errno)) {
      die("stop: cannot connect to %s: %s", sock.c_str(), std::strerror(errno));
    }
    std::fprintf(stderr, "shunt: stop: no daemon running on %s\n", sock.c_str());
    return 0;
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  pid_t pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
  auto req = make_request(ctl::Type::kStop);
  ssize_t sent = shunt::scm::send(fd, &req, sizeof(req), nullptr, 0);
  if (sent != static_cast<ssize_t>(sizeof(req))) {
    die("stop: send to %s: %s", sock.c_str(), std::strerror(sent < 0 ? int(-sent) : EMSGSIZE));
  }
  char reply[256];
  ssize_t n = recv_reply(fd, reply, sizeof(reply));  // an answer or the hang-up
  close(fd);
  if (n > 0) {
    std::string_view text(reply, strnlen(reply, static_cast<size_t>(n)));
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    // Not ours to stop: the daemon keeps running, so there is nothing to wait for.
    if (text.starts_with("refused")) die("stop: %.*s", int(text.size()), text.data());
  }

  ProcessWatch watch(pid);
  auto deadline = Clock::now() + kStopTimeout;
  while (Clock::now() < deadline) {
    int probe = connect_control(sock);
    bool socket_gone = probe < 0 && no_daemon_errno(errno);
    if (probe >= 0) close(probe);
    if (socket_gone && (pid <= 0 || watch.gone(0))) return 0;
    if (pid > 0) {
      (void)watch.gone(100);
    } else {
      usleep(100 * 1000);
    }
  }
  die("stop: shuntd (pid %d) still running %lld s after the stop request", pid,
      seconds(kStopTimeout));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view sub = argv[1];
  if (sub == "run") return cmd_run(argc - 2, argv + 2);
  if (sub == "stat") return cmd_stat(argc - 2, argv + 2);
  if (sub == "ss") return cmd_ss(argc - 2, argv + 2);
  if (sub == "capture") return cmd_capture(argc - 2, argv + 2);
  if (sub == "stop") return cmd_stop(argc - 2, argv + 2);
  if (sub == "help" || sub == "-h" || sub == "--help") {
    usage(stdout);
    return 0;
  }
  std::fprintf(stderr, "shunt: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
