// Small helpers shared by the load generator and the do-nothing forwarder:
// an owning descriptor, the monotonic clock, and readings of another
// process' CPU time and resident memory. Benchmark tools only: they must not
// depend on the broker's own net layer, which is what they measure.
#pragma once

#include <cstdint>
#include <string>

namespace bench {

// Owns one file descriptor; closes it on destruction.
class UniqueFd {
public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    int release() noexcept {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

// CLOCK_MONOTONIC in nanoseconds: the send timestamp carried in payloads.
std::int64_t now_ns() noexcept;
inline std::int64_t seconds_ns(double s) noexcept { return static_cast<std::int64_t>(s * 1e9); }

// This process' user + system CPU time in seconds (getrusage).
double self_cpu_s() noexcept;

// Quotes and backslashes escaped, control characters dropped: a JSON string body.
std::string json_escape(const std::string& s);

// A reading of a process' resource use.
struct ProcSample {
    bool ok = false;
    double cpu_s = 0;      // user + system time of every thread
    double user_s = 0;     // from /proc/PID/stat (clock ticks)
    double system_s = 0;
    long rss_kb = 0;       // VmRSS from /proc/PID/status
    long hwm_kb = 0;       // VmHWM: the peak RSS so far
};

// CPU time comes from the process CPU clock (clock_getcpuclockid, exact to
// the nanosecond) when the kernel allows it, else from utime+stime in
// /proc/PID/stat (10 ms ticks). Both count all threads of the process.
ProcSample sample_process(int pid) noexcept;

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft
// limit (the hard limit cannot be raised without CAP_SYS_RESOURCE).
std::uint64_t raise_nofile_limit() noexcept;

bool set_nonblocking(int fd) noexcept;
bool set_nodelay(int fd) noexcept;

// Lines over a pipe between generator processes. write_line adds the '\n';
// read_line takes the next line (without it) from `fd`, keeping what
// follows in `buf`; false at EOF or once `deadline_ns` (now_ns()) passed.
void write_line(int fd, const std::string& line) noexcept;
bool read_line(int fd, std::string& buf, std::string& line, std::int64_t deadline_ns);

// "127.0.0.1" + port -> listening/connected sockets; -1 on error (errno set).
int listen_tcp(const std::string& host, int port, int backlog) noexcept;

}  // namespace bench
