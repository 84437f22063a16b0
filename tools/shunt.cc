// shunt — the command-line tool.
//
//   shunt run [--nic DEV] [--ip ADDR/PREFIX] [--gateway IP] [--rundir DIR] -- CMD [ARGS...]
//   shunt stat [--rundir DIR]
//   shunt stop [--rundir DIR]
//
// `run` finds the daemon on $RUNDIR/shuntd.sock or starts one (shuntd, next to this
// binary), then execs CMD with libshunt.so in LD_PRELOAD. `stat` and `stop` speak the
// control-socket protocol of include/shunt/control.h. Every option has an environment
// variable of the same name (SHUNT_NIC …); the option wins.
//
// This tool links only the ABI headers and libc: it is the user's side of the control
// socket, like libshunt.so, and knows nothing of the stack inside.

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shunt/abi.h"
#include "shunt/control.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 15s;  // daemon start: socket must accept by then
constexpr auto kStopTimeout = 10s;   // shunt stop: daemon must be gone by then
constexpr auto kReplyTimeout = 5s;   // one control-socket answer
constexpr int kLogTailLines = 20;

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
  Setting nic, ip, gateway, rundir;
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
    {"--rundir", "SHUNT_RUNDIR", &Options::rundir},
};

void usage(FILE* out) {
  std::fputs(
      "usage: shunt run [--nic DEVICE] [--ip ADDR/PREFIX] [--gateway IP] [--rundir DIR]\n"
      "                 -- COMMAND [ARGS...]\n"
      "       shunt stat [--rundir DIR]\n"
      "       shunt stop [--rundir DIR]\n"
      "\n"
      "  run   use the shuntd answering on DIR/shuntd.sock, or start one, then run\n"
      "        COMMAND with libshunt.so preloaded\n"
      "  stat  print the daemon's counters\n"
      "  stop  stop the daemon and wait until it is gone\n"
      "\n"
      "Options and their variables: --nic SHUNT_NIC, --ip SHUNT_IP, --gateway\n"
      "SHUNT_GATEWAY, --rundir SHUNT_RUNDIR (default /run/shunt). SHUNT_DAEMON and\n"
      "SHUNT_PRELOAD override where shuntd and libshunt.so are found.\n",
      out);
}

// Parses OPTIONS [--] [COMMAND...] after the subcommand. allow_command: `run` only.
Options parse(int argc, char** argv, const char* sub, bool allow_command) {
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
    if (spec == nullptr) die("%s: unknown option '%s' (try shunt --help)", sub, argv[i]);
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
        o.rundir.value.c_str(), sizeof(sockaddr_un{}.sun_path) - 1 - std::strlen(shunt::ctl::kSocketName) - 1);
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
      die("%s '%s': cannot create '%s': %s", source, dir.c_str(), cur.c_str(), std::strerror(errno));
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
  if (n != sizeof(daemon_pid) || daemon_pid <= 0) die("cannot start %s: fork failed", daemon.c_str());

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
  std::fprintf(stderr, "shunt: shuntd (pid %d) did not accept connections on %s within %lld s; stopped it\n",
               daemon_pid, sock.c_str(),
               static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(kStartTimeout).count()));
  print_log_tail(log);
  std::exit(1);
}

int cmd_run(int argc, char** argv) {
  Options o = parse(argc, argv, "run", true);
  if (o.command.empty()) die("run: no command given (shunt run [OPTIONS] -- COMMAND [ARGS...])");
  check_path_length(o);
  if (o.ip.set() && !valid_ipv4_prefix(o.ip.value)) {
    die("run: %s '%s' is not an IPv4 ADDR[/PREFIX] (e.g. 198.18.7.1/24)", o.ip.source.c_str(), o.ip.value.c_str());
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
    if (!o.nic.set()) die("run: no daemon answers on %s and no NIC to start one: give --nic DEVICE or set SHUNT_NIC", sock.c_str());
    if (!o.ip.set()) die("run: no daemon answers on %s and no address to start one: give --ip ADDR/PREFIX or set SHUNT_IP", sock.c_str());
    mkdir_p(o.rundir.value, o.rundir.where().c_str());
    // Serialize concurrent `shunt run`s on one rundir: one starts the daemon, the others find it.
    std::string lock = o.rundir.value + "/shuntd.lock";
    int lock_fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) die("run: cannot open %s: %s", lock.c_str(), std::strerror(errno));
    if (flock(lock_fd, LOCK_EX) != 0) die("run: cannot lock %s: %s", lock.c_str(), std::strerror(errno));
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

shunt::ctl::Request make_request(shunt::ctl::Type type) {
  shunt::ctl::Request r{};
  r.type = static_cast<uint32_t>(type);
  r.abi_version = shunt::abi::kVersion;
  r.pid = getpid();
  return r;
}

// Sends one request; returns the connected fd. Dies with a clear message if no daemon.
int send_request(const Options& o, const char* sub, shunt::ctl::Type type) {
  std::string sock = socket_path(o);
  int fd = connect_control(sock);
  if (fd < 0) {
    die("%s: no daemon answers on %s (%s, %s): %s", sub, sock.c_str(),
        o.rundir.set() ? o.rundir.source.c_str() : "default rundir", o.rundir.value.c_str(),
        std::strerror(errno));
  }
  auto req = make_request(type);
  if (send(fd, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    die("%s: send to %s: %s", sub, sock.c_str(), std::strerror(errno));
  }
  return fd;
}

// Receives one message (up to `cap` bytes) within kReplyTimeout. Returns its size,
// 0 on hang-up, -1 on timeout or error.
ssize_t recv_reply(int fd, char* buf, size_t cap) {
  pollfd p{fd, POLLIN, 0};
  int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(kReplyTimeout).count());
  if (poll(&p, 1, ms) <= 0) {
    errno = ETIMEDOUT;
    return -1;
  }
  return recv(fd, buf, cap, 0);
}

int cmd_stat(int argc, char** argv) {
  Options o = parse(argc, argv, "stat", false);
  check_path_length(o);
  int fd = send_request(o, "stat", shunt::ctl::Type::kStats);
  std::vector<char> buf(shunt::ctl::kStatsMax + 1);
  ssize_t n = recv_reply(fd, buf.data(), buf.size());
  close(fd);
  if (n < 0) die("stat: no answer from %s: %s", socket_path(o).c_str(), std::strerror(errno));
  if (n == 0) die("stat: %s hung up without answering", socket_path(o).c_str());
  size_t len = strnlen(buf.data(), static_cast<size_t>(n));  // text, maybe NUL-terminated
  std::fwrite(buf.data(), 1, len, stdout);
  if (len > 0 && buf[len - 1] != '\n') std::fputc('\n', stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int cmd_stop(int argc, char** argv) {
  Options o = parse(argc, argv, "stop", false);
  check_path_length(o);
  std::string sock = socket_path(o);
  int fd = connect_control(sock);
  if (fd < 0) {
    if (!no_daemon_errno(errno)) die("stop: cannot connect to %s: %s", sock.c_str(), std::strerror(errno));
    std::fprintf(stderr, "shunt: stop: no daemon running on %s\n", sock.c_str());
    return 0;
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  pid_t pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
  auto req = make_request(shunt::ctl::Type::kStop);
  if (send(fd, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    die("stop: send to %s: %s", sock.c_str(), std::strerror(errno));
  }
  char reply[256];
  (void)recv_reply(fd, reply, sizeof(reply));  // an answer or the hang-up; either will do
  close(fd);

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
      static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(kStopTimeout).count()));
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
  if (sub == "stop") return cmd_stop(argc - 2, argv + 2);
  if (sub == "help" || sub == "-h" || sub == "--help") {
    usage(stdout);
    return 0;
  }
  std::fprintf(stderr, "shunt: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
