#include "daemon/logging.hpp"

#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace mqttools::daemon {

namespace {

// Structured journal entries: MESSAGE, PRIORITY and SYSLOG_IDENTIFIER, so
// `journalctl -p warning -u mqttoolsd` filters by level.
class JournalSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        const auto& text = msg.payload;
        sd_journal_send("MESSAGE=%.*s", static_cast<int>(text.size()), text.data(),
                        "PRIORITY=%d", priority(msg.level), "SYSLOG_IDENTIFIER=mqttoolsd", nullptr);
    }
    void flush_() override {}

private:
    static int priority(spdlog::level::level_enum level) {
        switch (level) {
            case spdlog::level::trace:
            case spdlog::level::debug: return LOG_DEBUG;
            case spdlog::level::info: return LOG_INFO;
            case spdlog::level::warn: return LOG_WARNING;
            case spdlog::level::err: return LOG_ERR;
            case spdlog::level::critical: return LOG_CRIT;
            default: return LOG_INFO;
        }
    }
};

std::string g_destination = "stderr";

spdlog::level::level_enum to_spdlog(config::LogLevel level, bool verbose) {
    if (verbose && level > config::LogLevel::debug) return spdlog::level::debug;
    switch (level) {
        case config::LogLevel::trace: return spdlog::level::trace;
        case config::LogLevel::debug: return spdlog::level::debug;
        case config::LogLevel::info: return spdlog::level::info;
        case config::LogLevel::warning: return spdlog::level::warn;
        case config::LogLevel::error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

std::optional<std::string> install(const config::Config& cfg, bool verbose) {
    spdlog::sink_ptr sink;
    std::string pattern = "%Y-%m-%dT%H:%M:%S.%e %l: %v";
    const bool journal = cfg.log_dest == config::LogDest::journal ||
                         (cfg.log_dest == config::LogDest::stderr_ && stderr_is_journal());
    if (cfg.log_dest == config::LogDest::file) {
        try {
            sink = std::make_shared<spdlog::sinks::basic_file_sink_st>(cfg.log_file, false);
        } catch (const spdlog::spdlog_ex& e) {
            return "cannot open log_file '" + cfg.log_file + "': " + e.what();
        }
        g_destination = "file " + cfg.log_file;
    } else if (journal) {
        sink = std::make_shared<JournalSink>();
        pattern = "%v";  // the journal records time and priority itself
        g_destination = "journal";
    } else {
        sink = std::make_shared<spdlog::sinks::stderr_sink_st>();
        g_destination = "stderr";
    }
    auto logger = std::make_shared<spdlog::logger>("mqttoolsd", std::move(sink));
    logger->set_pattern(pattern);
    logger->set_level(to_spdlog(cfg.log_level, verbose));
    // Warnings and errors reach the file/stream even if we are killed next.
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(std::move(logger));
    return std::nullopt;
}

}  // namespace

bool stderr_is_journal() {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return false;
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

std::optional<std::string> setup_logging(const config::Config& cfg, bool verbose) {
    return install(cfg, verbose);
}

std::optional<std::string> reload_logging(const config::Config& cfg, bool verbose) {
    // Recreating the sink reopens the log file, which is what logrotate's
    // postrotate "systemctl reload" expects. On failure the old logger stays.
    return install(cfg, verbose);
}

std::string log_destination_description() { return g_destination; }

}  // namespace mqttools::daemon
