// A real mqttoolsd for the client tests, started from the build tree next to
// the test binary (build/src/daemon/mqttoolsd) on a free port, optionally
// with a TOML configuration; SIGTERM and reaped on destruction.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "fake_broker.hpp"

extern char** environ;

namespace test_support {

inline std::filesystem::path mqttoolsd_path() {
    // This binary is build/tests/client/test_client.
    return std::filesystem::read_symlink("/proc/self/exe").parent_path() / ".." / ".." / "src" / "daemon" /
           "mqttoolsd";
}

class Mqttoolsd {
public:
    // config: TOML text for -c ("" : none).
    explicit Mqttoolsd(const std::string& config = {}) {
        {
            FakeBroker probe;  // a free port
            port_ = probe.port();
        }
        const std::string exe = mqttoolsd_path().string();
        const std::string port = std::to_string(port_);
        if (!config.empty()) {
            config_path_ = std::filesystem::temp_directory_path() /
                           ("test_client-mqttoolsd-" + std::to_string(::getpid()) + "-" + port + ".toml");
            std::ofstream(config_path_) << config;
        }
        const std::string config_arg = config_path_.string();
        const char* argv[] = {exe.c_str(), "-p", port.c_str(), nullptr, nullptr, nullptr};
        if (!config.empty()) {
            argv[3] = "-c";
            argv[4] = config_arg.c_str();
        }
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
        const int rc = posix_spawn(&pid_, exe.c_str(), &actions, nullptr, const_cast<char**>(argv), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start " + exe);
        wait_listening();
    }
    ~Mqttoolsd() {
        ::kill(pid_, SIGTERM);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        if (!config_path_.empty()) {
            std::error_code ec;
            std::filesystem::remove(config_path_, ec);
        }
    }
    Mqttoolsd(const Mqttoolsd&) = delete;
    Mqttoolsd& operator=(const Mqttoolsd&) = delete;
    std::uint16_t port() const { return port_; }

private:
    void wait_listening() {
        for (int i = 0; i < 500; ++i) {
            Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port_);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        throw std::runtime_error("mqttoolsd did not start listening");
    }
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
    std::filesystem::path config_path_;
};

}  // namespace test_support
