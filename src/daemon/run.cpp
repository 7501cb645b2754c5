#include "daemon/run.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"

namespace mqttools::daemon {

namespace {

// SIGINT/SIGTERM arrive through a signalfd watched by the reactor, so the
// stop runs on the reactor's thread like everything else.
class SignalHandler final : public net::IoHandler {
public:
    SignalHandler(net::Reactor& reactor, broker::Broker& broker) : reactor_(reactor), broker_(broker) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigprocmask(SIG_BLOCK, &set, &old_);
        fd_.reset(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
        if (fd_) reactor_.add(fd_.get(), EPOLLIN, this);
    }
    ~SignalHandler() {
        if (fd_) reactor_.remove(fd_.get());
        sigprocmask(SIG_SETMASK, &old_, nullptr);
    }
    SignalHandler(const SignalHandler&) = delete;
    SignalHandler& operator=(const SignalHandler&) = delete;

    void on_io(std::uint32_t) override {
        signalfd_siginfo info{};
        while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
                spdlog::info("Received {}, shutting down.", info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
                broker_.shutdown();
                reactor_.stop();
            }
        }
    }

private:
    net::Reactor& reactor_;
    broker::Broker& broker_;
    net::UniqueFd fd_;
    sigset_t old_{};
};

}  // namespace

int run_broker(const config::Config& config) {
    ::signal(SIGPIPE, SIG_IGN);
    net::Reactor reactor;
    if (!reactor.valid()) {
        spdlog::error("epoll_create1 failed");
        return 1;
    }
    broker::Broker broker(reactor, config);

    std::vector<config::Listener> listeners = config.listeners;
    if (listeners.empty()) listeners.emplace_back();  // 127.0.0.1:1883
    for (const auto& l : listeners) {
        std::string error;
        net::UniqueFd fd = net::listen_tcp(l.bind, l.port, error);
        if (!fd) {
            spdlog::error("{}", error);
            return 1;
        }
        const std::string name = (l.bind.empty() ? std::string("*") : l.bind) + ":" +
                                 std::to_string(net::local_port(fd.get()));
        spdlog::info("Opening listener on {}.", name);
        broker.add_listener(std::move(fd), name);
    }

    SignalHandler signals(reactor, broker);
    reactor.run();
    spdlog::info("mqttoolsd stopped.");
    return 0;
}

}  // namespace mqttools::daemon
