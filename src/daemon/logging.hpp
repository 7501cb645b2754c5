// spdlog set-up for mqttoolsd: stderr by default, the systemd journal (with
// the message's syslog priority) when stderr is connected to the journal
// (JOURNAL_STREAM) or log_dest = "journal", or a file. Connect/disconnect
// lines are info; per-message lines are debug/trace only.
#pragma once

#include <optional>
#include <string>

#include "config/config.hpp"

namespace mqttools::daemon {

// Installs the default spdlog logger for CFG (-v forces debug). Returns an
// error text (e.g. an unwritable log_file) instead of throwing; the caller
// exits 1 before opening any socket.
std::optional<std::string> setup_logging(const config::Config& cfg, bool verbose);

// SIGHUP: apply a new log_level and reopen a log file (for logrotate).
std::optional<std::string> reload_logging(const config::Config& cfg, bool verbose);

// Where logs actually go, for the start-up line: "stderr", "journal", "file PATH".
std::string log_destination_description();

// True when stderr is the journal stream systemd set up for us: JOURNAL_STREAM
// holds "DEVICE:INODE" of that stream (systemd.exec(5)).
bool stderr_is_journal();

}  // namespace mqttools::daemon
