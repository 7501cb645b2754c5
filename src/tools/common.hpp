// What the mqttools client subcommands share: the connection options, the
// client they make, and message formatting (auto / binary / text).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mqttools/client.hpp"
#include "tools/args.hpp"

namespace mqttools::tools {

struct CommonOptions {
    std::string host = "localhost";
    std::int64_t port = 1883;
    std::string client_id;
    std::string cafile;
    bool no_check_hostname = false;
    std::string username;
    std::string password;
    bool have_username = false;
    bool have_password = false;
};

// --host --port --client-id --cafile --no-check-hostname --username --password
void add_common_options(ArgParser& parser, CommonOptions& options);

// Client options from the common ones: a few quick connection attempts,
// then an error (never a silent hang on a broker that is down).
ClientOptions make_client_options(const CommonOptions& common);

// "'localhost:1883'"
std::string endpoint(const CommonOptions& common);

// Message bytes for display, as the seed: auto = UTF-8 text when it is valid
// UTF-8, else hex; binary = hex; text = UTF-8 with U+FFFD for bad bytes. NUL
// is shown as \x00.
std::string format_message(std::string_view format, std::string_view bytes);

// A MESSAGE argument to bytes: auto = the hex-decoded bytes when it is valid
// hex, else its UTF-8 bytes; binary = hex-decoded (UsageError when not hex);
// text = as given.
std::string encode_message(std::string_view format, std::string_view message);

std::string hexlify(std::string_view bytes);

// Writes and flushes (output is often a pipe read line by line).
void print_line(std::string_view line);

}  // namespace mqttools::tools
