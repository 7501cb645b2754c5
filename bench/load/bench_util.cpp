#include "bench_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

namespace bench {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
}

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

std::int64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

double self_cpu_s() noexcept {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        if (static_cast<unsigned char>(ch) < 0x20) continue;
        out += ch;
    }
    return out;
}

ProcSample sample_process(int pid) noexcept {
    ProcSample s;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    std::ifstream stat(path);
    std::string line;
    if (!stat || !std::getline(stat, line)) return s;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 (1-based), i.e. the
    // 12th and 13th after the name.
    auto close = line.rfind(')');
    if (close == std::string::npos) return s;
    std::istringstream fields(line.substr(close + 2));
    std::vector<std::string> f;
    std::string tok;
    while (fields >> tok && f.size() < 14) f.push_back(tok);
    if (f.size() < 13) return s;
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    s.user_s = std::stod(f[11]) / tick;
    s.system_s = std::stod(f[12]) / tick;
    s.cpu_s = s.user_s + s.system_s;

    clockid_t clock{};
    timespec ts{};
    if (clock_getcpuclockid(pid, &clock) == 0 && clock_gettime(clock, &ts) == 0) {
        s.cpu_s = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
    }

    std::snprintf(path, sizeof path, "/proc/%d/status", pid);
    std::ifstream status(path);
    while (status && std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0) s.hwm_kb = std::stol(line.substr(6));
        if (line.rfind("VmRSS:", 0) == 0) {
            s.rss_kb = std::stol(line.substr(6));
            break;  // after VmHWM
        }
    }
    s.ok = true;
    return s;
}

std::uint64_t raise_nofile_limit() noexcept {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

void write_line(int fd, const std::string& line) noexcept {
    std::string out = line + "\n";
    std::size_t off = 0;
    while (off < out.size()) {
        const ssize_t n = ::write(fd, out.data() + off, out.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        off += static_cast<std::size_t>(n);
    }
}

bool read_line(int fd, std::string& buf, std::string& line, std::int64_t deadline_ns) {
    for (;;) {
        const auto nl = buf.find('\n');
        if (nl != std::string::npos) {
            line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            return true;
        }
        const std::int64_t left = deadline_ns - now_ns();
        if (left <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left / 1'000'000 + 1, 1000)));
        if (r < 0 && errno != EINTR) return false;
        if (r <= 0) continue;
        char tmp[65536];
        const ssize_t n = ::read(fd, tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        buf.append(tmp, static_cast<std::size_t>(n));
    }
}

bool set_nonblocking(int fd) noexcept {
    int flags = fcntl(fd, F_GETFL, 0);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool set_nodelay(int fd) noexcept {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
}

int listen_tcp(const std::string& host, int port, int backlog) noexcept {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return -1;
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return -1;
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return -1;
    if (listen(fd.get(), backlog) != 0) return -1;
    return fd.release();
}

}  // namespace bench
